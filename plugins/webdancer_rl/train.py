"""`webdancer rl train`: the engine's native command, recorded in `command.sh`, checked and run.

verl: `python -m verl.trainer.main_ppo` with DAPO settings, every one a hydra override of verl's own
`ppo_trainer` config, so the command runs unchanged on a Ray cluster with the same files.
TRL: `accelerate launch -m webdancer_rl.trl_engine rl/config.yaml` (the resolved config) on this machine.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

from webdancer.config import WebdancerConfig
from webdancer.config_loader import config_to_yaml
from webdancer.errors import ConfigError, WebdancerError
from webdancer.jsonl import atomic_write_text
from webdancer.launch import log_tail, run_logged, run_preflight, venv_bin, venv_env, write_command_script
from webdancer.rewards import check_weights, configured_options, configured_weights
from webdancer.token_trajectories import TOKEN_ROLLOUTS_ENV
from webdancer.tracking import Reporting
from webdancer_rl.alarms import Alarms, Thresholds
from webdancer_rl.hydra_overrides import override
from webdancer_rl.metrics import add_verl_metrics, read_metrics
from webdancer_rl.prepare import check_prepared, read_rows
from webdancer_rl.ray_job import RAY_JOB_ENV, job_config
from webdancer_rl.rollout_stats import ROLLOUT_STATS_ENV

REWARD_MODULE = Path(__file__).resolve().with_name("reward.py")
VERL_METRICS = "verl_metrics.jsonl"  # verl's file logger, in verl's names; metrics.jsonl has ours
ROLLOUT_STATS = "rollout_stats"  # what our verl workers record of each rollout and score (webdancer_rl.rollout_stats)


def default_model_path(cfg: WebdancerConfig) -> str:
    if cfg.rl.model_path:
        return cfg.rl.model_path
    sft = Path(cfg.sft.output_dir or cfg.run.dir / "sft")
    return str(sft) if (sft / "config.json").is_file() else cfg.sft.model_path


def data_dir(cfg: WebdancerConfig) -> Path:
    return Path(cfg.rl.data_dir or cfg.run.dir / "rl_data")


def output_dir(cfg: WebdancerConfig) -> Path:
    return Path(cfg.rl.output_dir or cfg.run.dir / "rl")


def verl_overrides(cfg: WebdancerConfig, data_dir: Path, output_dir: Path) -> list[str]:
    """verl config overrides for a DAPO run with our data, tools, agent loop and reward.

    Every path is absolute (Ray workers do not start in this folder), and the run's environment variables reach
    every worker through `ray_kwargs.ray_init.runtime_env` (API keys too, but not here: see `webdancer_rl.ray_job`)."""
    rl = cfg.rl
    data_dir, output_dir = data_dir.resolve(), output_dir.resolve()
    pairs: list[tuple[str, object]] = [
        ("data.train_files", data_dir / "train.parquet"),
        ("data.val_files", data_dir / "val.parquet"),
        ("data.prompt_key", "prompt"),
        ("data.max_prompt_length", rl.max_prompt_length),
        ("data.max_response_length", rl.max_response_length),
        ("data.train_batch_size", rl.train_batch_size),
        ("data.return_raw_chat", True),
        ("data.filter_overlong_prompts", True),
        ("data.truncation", "error"),
        ("data.seed", rl.seed),
        ("actor_rollout_ref.model.path", local_path(default_model_path(cfg))),
        ("actor_rollout_ref.actor.optim.lr", rl.learning_rate),
        ("actor_rollout_ref.actor.ppo_mini_batch_size", rl.ppo_mini_batch_size),
        ("actor_rollout_ref.actor.clip_ratio_low", rl.clip_ratio_low),
        ("actor_rollout_ref.actor.clip_ratio_high", rl.clip_ratio_high),
        ("actor_rollout_ref.actor.loss_agg_mode", rl.loss_agg_mode),
        ("actor_rollout_ref.actor.use_kl_loss", rl.use_kl_loss),
        ("actor_rollout_ref.actor.kl_loss_coef", rl.kl_loss_coef),
        # Hugging Face weights beside verl's sharded checkpoint: what the pipeline serves and evaluates after RL.
        ("actor_rollout_ref.actor.checkpoint.save_contents", ["model", "optimizer", "extra", "hf_model"]),
        ("actor_rollout_ref.rollout.name", rl.rollout_engine),
        ("actor_rollout_ref.rollout.mode", "async"),
        ("actor_rollout_ref.rollout.n", rl.n_rollouts),
        ("actor_rollout_ref.rollout.temperature", rl.temperature),
        ("actor_rollout_ref.rollout.top_p", rl.top_p),
        ("actor_rollout_ref.rollout.tensor_model_parallel_size", rl.tensor_parallel),
        ("actor_rollout_ref.rollout.gpu_memory_utilization", rl.gpu_memory_utilization),
        ("actor_rollout_ref.rollout.multi_turn.enable", True),
        ("actor_rollout_ref.rollout.multi_turn.max_assistant_turns", rl.max_turns),
        ("actor_rollout_ref.rollout.multi_turn.max_tool_response_length", rl.max_tool_response_length),
        ("actor_rollout_ref.rollout.multi_turn.tool_response_truncate_side", rl.tool_response_truncate_side),
        ("actor_rollout_ref.rollout.multi_turn.format", "webdancer"),
        ("actor_rollout_ref.rollout.multi_turn.tool_config_path", data_dir / "tool_config.yaml"),
        ("actor_rollout_ref.rollout.agent.default_agent_loop", "webdancer_agent"),
        ("actor_rollout_ref.rollout.agent.agent_loop_config_path", data_dir / "agent_loops.yaml"),
        *micro_batches(rl),
        ("algorithm.adv_estimator", rl.adv_estimator),
        ("algorithm.use_kl_in_reward", False),
        ("algorithm.filter_groups.enable", rl.filter_groups),
        ("algorithm.filter_groups.metric", rl.filter_groups_metric),
        ("algorithm.filter_groups.max_num_gen_batches", rl.max_num_gen_batches),
        ("reward.reward_manager.name", "dapo"),
        ("reward.custom_reward_function.path", REWARD_MODULE),
        ("reward.custom_reward_function.name", "compute_score"),
        ("trainer.n_gpus_per_node", rl.n_gpus_per_node),
        ("trainer.nnodes", rl.nnodes),
        ("trainer.total_training_steps", rl.total_training_steps),
        # verl saves (Hugging Face weights included) every save_freq steps and at the last step; never with 0 or -1.
        ("trainer.save_freq", rl.save_freq if rl.save_freq > 0 else rl.total_training_steps),
        ("trainer.test_freq", rl.test_freq),
        ("trainer.val_before_train", False),
        # file: metrics.jsonl (VERL_FILE_LOGGER_PATH); a tracker other than trackio by verl's own name for it (trackio is fed from metrics.jsonl)
        ("trainer.logger", list(dict.fromkeys([*rl.logger, "file", *([cfg.tracking.backend] if Reporting.of(cfg).native else [])]))),
        ("trainer.project_name", cfg.tracking.project),
        ("trainer.experiment_name", cfg.run.name),
        ("trainer.default_local_dir", output_dir / "checkpoints"),
        # Every Ray worker, on every node, runs the RL environment's Python (the same path on each node).
        ("ray_kwargs.ray_init.runtime_env.py_executable", verl_python(cfg)),
        ("hydra.run.dir", output_dir / "hydra"),  # not ./outputs/<date> in whatever folder verl was started from
    ]
    out = [o for key, v in pairs for o in override(key, str(v) if isinstance(v, Path) else v)]
    out += override("ray_kwargs.ray_init.runtime_env.env_vars", worker_env(cfg, output_dir), add=True)
    # Keys verl reads but does not declare: added with hydra's `+`.
    out += override("reward.custom_reward_function.reward_kwargs.weights", configured_weights(cfg), add=True)
    out += override("reward.custom_reward_function.reward_kwargs.options", configured_options(cfg), add=True)
    out += override("reward.reward_kwargs", {
        "overlong_buffer_cfg": {"enable": rl.overlong_buffer > 0, "len": max(rl.overlong_buffer, 1), "penalty_factor": rl.overlong_penalty,
                                "log": True},
        "max_resp_len": rl.max_response_length}, add=True)
    return out + list(rl.extra)


def micro_batches(rl) -> list[tuple[str, object]]:
    """verl refuses a run without micro-batch sizes for the update and both log-prob passes. rl.micro_batch_size
    sets all three; 0 lets verl pack micro-batches by tokens (dynamic batch size), at most one whole rollout's
    worth a GPU unless raised in rl.extra (the log-prob passes follow the actor's setting)."""
    if rl.micro_batch_size > 0:
        return [("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu", rl.micro_batch_size),
                ("actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu", rl.micro_batch_size),
                ("actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu", rl.micro_batch_size)]
    return [("actor_rollout_ref.actor.use_dynamic_bsz", True),
            ("actor_rollout_ref.actor.ppo_max_token_len_per_gpu", rl.max_prompt_length + rl.max_response_length)]


def local_path(path: str) -> str:
    """A folder on this machine as an absolute path (Ray workers start elsewhere); anything else as given."""
    return str(Path(path).resolve()) if Path(path).exists() else path


def verl_python(cfg: WebdancerConfig) -> str:
    return str(Path(cfg.rl.venv).absolute() / "bin" / "python")


def worker_env(cfg: WebdancerConfig, output_dir: Path) -> dict[str, str]:
    """The variables every Ray worker needs (not secrets): offline hub, verl's metrics file, the tracker's. Workers import
    webdancer from the RL environment (scripts/setup_rl.sh installs this checkout there)."""
    record = {TOKEN_ROLLOUTS_ENV: str(output_dir.resolve() / "token_rollouts")} if cfg.rl.record_tokens else {}
    return {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "VERL_FILE_LOGGER_PATH": str(output_dir.resolve() / VERL_METRICS), ROLLOUT_STATS_ENV: str(output_dir.resolve() / ROLLOUT_STATS),
            **record, **Reporting.of(cfg).env}


def api_key_names(cfg: WebdancerConfig) -> list[str]:
    """The environment variables holding the API keys the rollouts' tools and the rewards read (any `*api_key_env` option)."""
    from webdancer.plugins import get_plugins

    found: list[str] = []

    def walk(obj: Any) -> None:
        if is_dataclass(obj):
            obj = {f.name: getattr(obj, f.name) for f in fields(obj)}
        if isinstance(obj, dict):
            for k, v in obj.items():
                if str(k).endswith("api_key_env") and v:
                    found.extend([v] if isinstance(v, str) else v)
                else:
                    walk(v)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)

    plugins = get_plugins()
    for name in cfg.agent.tools:
        walk(plugins.options("tools", name, cfg.tools.get(name), f"tools.{name}"))
    walk(configured_options(cfg))
    return list(dict.fromkeys(found))


def gpu_visible() -> bool:
    import subprocess

    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def check_rewards(cfg: WebdancerConfig) -> None:
    """Validate `rewards` and the judge here, before an engine starts, not in its reward workers."""
    from webdancer.plugins import get_plugins

    weights, options = configured_weights(cfg), configured_options(cfg)
    check_weights(weights, options)
    for name in weights:
        get_plugins().options("rewards", name, options.get(name), "judge" if name == "judge" else f"rewards.{name}")
    metrics = ["score", "reward", *weights]
    if cfg.rl.filter_groups and cfg.rl.filter_groups_metric not in metrics:
        raise ConfigError(f"rl.filter_groups_metric={cfg.rl.filter_groups_metric!r} is not a score of this run; choose one of {', '.join(metrics)}")


def verl_command(cfg: WebdancerConfig, data_dir: Path, output_dir: Path) -> list[str]:
    return [verl_python(cfg), "-m", "verl.trainer.main_ppo", *verl_overrides(cfg, data_dir, output_dir)]


def check_chat_template(model_path: str) -> None:
    """A rollout is append-only: a template that re-renders earlier turns (QwQ drops their thoughts) would make RL
    train on a text the served model never sees. Checked where the model folder is on this machine."""
    folder = Path(model_path)
    if not (folder / "tokenizer_config.json").is_file():
        return
    from transformers import AutoTokenizer
    from webdancer_models.chat_template import renders_verbatim

    if not renders_verbatim(AutoTokenizer.from_pretrained(str(folder))):
        raise ConfigError(f"the chat template of {folder} re-renders earlier turns of a conversation (thoughts dropped or "
                          f"rewritten), so RL would train on text the served model never sees: fine-tune it with `webdancer sft "
                          f"train` first, or give it the wire template with `webdancer model template {folder} --install`")


def run_rl(cfg: WebdancerConfig, data_dir: Path, output_dir: Path, echo: Callable[[str], None] = print, dry_run: bool = False,
           check_only: bool = False) -> list[str]:
    """Check everything, record the command (always), then run it unless `dry_run` (only record) or `check_only`
    (verl: also run verl's own checks of the command, here); returns the command."""
    if not dry_run:
        check_prepared(cfg, data_dir)
        check_chat_template(default_model_path(cfg))
    check_rewards(cfg)
    output_dir.mkdir(parents=True, exist_ok=True)
    if cfg.rl.engine == "trl":
        return run_trl(cfg, data_dir, output_dir, echo, dry_run or check_only)
    return run_verl(cfg, data_dir, output_dir, echo, dry_run, check_only)


def verl_env(cfg: WebdancerConfig, output_dir: Path) -> dict[str, str]:
    """The verl driver's environment: the RL environment first on PATH, and what the workers get (for a Ray it starts)."""
    return {**worker_env(cfg, output_dir), **venv_env(Path(cfg.rl.venv))}


def run_verl(cfg: WebdancerConfig, data_dir: Path, output_dir: Path, echo: Callable[[str], None], dry_run: bool, check_only: bool) -> list[str]:
    command = verl_command(cfg, data_dir, output_dir)
    keys = api_key_names(cfg)
    key_line = [f'export {RAY_JOB_ENV}="$({shlex.quote(command[0])} -m webdancer_rl.ray_job {" ".join(keys)})"  # API keys for every Ray worker'] if keys else []
    write_command_script(output_dir / "command.sh", command, "DAPO with verl; on a cluster: start Ray on every node from the RL environment, "
                         "then run this on the head node (RAY_ADDRESS set).", worker_env(cfg, output_dir), Path(cfg.rl.venv), key_line)
    if dry_run:
        return command
    if not Path(command[0]).is_file():
        raise WebdancerError(f"{command[0]} not found: run `bash scripts/setup_rl.sh` (WEBDANCER_RL_GPU=1 on a GPU machine) or set rl.venv")
    if not check_only and not gpu_visible() and not os.environ.get("RAY_ADDRESS"):
        # Seen with verl 0.9.1 on a CPU machine: its ResourcePoolManager refuses ("Total available
        # GPUs 0 is less than total desired GPUs 1") even with trainer.device=cpu, and on a 2-CPU
        # Ray node it first waits forever for TransferQueue's storage actors.
        raise WebdancerError(
            "verl's trainer needs a GPU and none is visible here (nvidia-smi) nor is RAY_ADDRESS set: "
            f"run on a GPU machine, point RAY_ADDRESS at a Ray cluster with GPUs, or run {output_dir / 'command.sh'} there "
            "(`webdancer rl train --check` runs verl's own checks of it on this machine); or train on this machine with rl.engine=trl"
        )
    env = {**os.environ, **verl_env(cfg, output_dir), **({RAY_JOB_ENV: job_config(keys, os.environ)} if keys else {})}
    report = verl_preflight(command, env)
    echo(f"verl accepts the command: {len(report['checked'])} checks ({report['train_rows']} train and {report['val_rows']} val prompts, "
         f"tools {', '.join(report['tools'])})")
    if check_only:
        return command
    Reporting.of(cfg).check(command[0], f"verl's environment {cfg.rl.venv}")
    metrics = output_dir / "metrics.jsonl"
    alarms = Alarms(Thresholds.of(cfg.rl), echo, history=read_metrics(metrics))
    last = [0.0]

    def watch(line: str) -> None:  # verl's steps into metrics.jsonl as they come (at most every 5 s), with their alarms
        echo(line)
        if time.monotonic() - last[0] > 5:
            last[0] = time.monotonic()
            add_verl_metrics(output_dir / VERL_METRICS, metrics, alarms.check, output_dir / ROLLOUT_STATS)

    code = run_logged(command, output_dir / "train.log", env, watch)
    add_verl_metrics(output_dir / VERL_METRICS, metrics, alarms.check, output_dir / ROLLOUT_STATS)
    Reporting.of(cfg).relay("rl", output_dir / "metrics.jsonl")
    if code != 0:
        raise WebdancerError(f"verl exited with code {code}; last lines:\n" + log_tail(output_dir / "train.log"))
    model = publish_verl_model(output_dir)
    echo(f"trained model: {model} -> {model.resolve()}")
    return command


def verl_preflight(command: list[str], env: dict[str, str], model: Optional[str] = None) -> dict[str, Any]:
    """verl's own checks of `command` (webdancer_rl.verl_preflight) in the RL environment; a refusal is an error."""
    substitute = ["--model", model] if model else []
    return run_preflight([command[0], "-m", "webdancer_rl.verl_preflight", *substitute, "--", *command[3:]], env, "verl refuses",
                         f"(the command: {command[0]} -m verl.trainer.main_ppo ...; rerun with --print-command to see it)")


TRACKER = "latest_checkpointed_iteration.txt"  # verl.utils.checkpoint.checkpoint_manager.get_checkpoint_tracker_filename


def verl_hf_model(checkpoints: Path) -> Path:
    """The Hugging Face folder of verl's latest checkpoint (global_step_N/actor/huggingface), weights included."""
    tracker = checkpoints / TRACKER
    if not tracker.is_file():
        raise WebdancerError(f"verl left no checkpoint in {checkpoints} ({TRACKER} is missing): trainer.save_freq and the "
                             "checkpoint folder are set by `webdancer rl train`; see train.log")
    folder = checkpoints / f"global_step_{int(tracker.read_text().strip())}" / "actor" / "huggingface"
    if not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
        raise WebdancerError(f"{folder} has no Hugging Face weights (verl saves them only with hf_model in "
                             f"actor.checkpoint.save_contents): merge its sharded checkpoint with `python -m verl.model_merger merge "
                             f"--backend fsdp --local_dir {folder.parent} --target_dir {folder}`")
    return folder


def publish_verl_model(output_dir: Path) -> Path:
    """`rl/model`, where both engines leave the trained model for serving and evaluation: for verl, a link to the Hugging
    Face weights of its latest checkpoint."""
    target = verl_hf_model(output_dir / "checkpoints")
    link = output_dir / "model"
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        raise WebdancerError(f"{link} exists and is not verl's: move it away (nothing is overwritten)")
    link.symlink_to(os.path.relpath(target, output_dir))
    return link


def trl_command(config_file: Path, gpu: bool, python: str = sys.executable) -> list[str]:
    """`accelerate launch` of the TRL engine module, one process (this machine's CPU or one GPU), by `python` (this
    environment's, or vLLM's for rl.trl_rollouts=vllm)."""
    cpu = [] if gpu else ["--cpu", "--num_cpu_threads_per_process", str(os.cpu_count() or 1)]
    return [python, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", *cpu, "-m", "webdancer_rl.trl_engine", str(config_file)]


def trl_vllm_env(cfg: WebdancerConfig, model_made_later: bool = False) -> dict[str, str]:
    """The environment of a TRL run with vLLM rollouts: vLLM's (rl.vllm_venv on PATH, its compile cache, and on the
    CPU threads bound to every CPU of this process and a KV cache for serve.kv_cache_tokens, grown to hold one whole
    rollout), checked as `serve.backend=vllm` is: the environment there, a CPU its build runs on, memory for the
    cache. A ConfigError or WebdancerError names the setting."""
    from webdancer_models.vllm_serve import check_vllm_machine

    rl = cfg.rl
    longest = rl.max_prompt_length + rl.max_response_length
    engine = replace(cfg.serve, backend="vllm", venv=rl.vllm_venv, model_path=default_model_path(cfg), context_length=longest,
                     kv_cache_tokens=max(cfg.serve.kv_cache_tokens, longest), dtype="float32")
    return check_vllm_machine(engine, model_made_later, user="rl.trl_rollouts=vllm", venv_setting="rl.vllm_venv")


def run_trl(cfg: WebdancerConfig, data_dir: Path, output_dir: Path, echo: Callable[[str], None], dry_run: bool) -> list[str]:
    from webdancer_models.export import clean_model_folder

    from webdancer_rl.trl_engine import check_trl_options, grpo_settings, model_folder_problem, rollout_generation

    model_path = default_model_path(cfg)
    resolved = replace(cfg, rl=replace(cfg.rl, data_dir=str(data_dir), output_dir=str(output_dir), model_path=model_path))
    check_trl_options(cfg.rl.trl)
    settings = grpo_settings(resolved, output_dir)  # the batch/loss settings map onto TRL, or a ConfigError says why not
    gpu = gpu_visible()
    generation = rollout_generation(resolved, settings, gpu=gpu and not settings.get("use_cpu"))  # fits this machine and the sampling
    config_file = output_dir / "config.yaml"
    atomic_write_text(config_file, config_to_yaml(resolved))
    venv = Path(cfg.rl.vllm_venv) if generation == "vllm" else None  # TRL with vLLM runs in vLLM's environment
    command = trl_command(config_file, gpu, python=str(venv_bin(venv) / "python") if venv else sys.executable)
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "TRL_EXPERIMENTAL_SILENCE": "1",
           **Reporting.of(cfg).env}
    if venv is not None:  # its PATH goes in as the environment's (write_command_script's venv), not this shell's
        env.update({k: v for k, v in trl_vllm_env(resolved, model_made_later=dry_run).items() if k not in ("PATH", "VIRTUAL_ENV")})
    write_command_script(output_dir / "command.sh", command, "GRPO/DAPO with TRL on this machine; rerun to resume from the last checkpoint.", env, venv)
    if dry_run:
        return command
    problem = model_folder_problem(Path(model_path))
    if problem:
        raise WebdancerError(problem)
    Reporting.of(cfg).check(None, "this environment")
    if clean_model_folder(Path(model_path)):
        echo(f"removed a stale GGUF quantization_config from {model_path}/config.json (its weights are plain floats)")
    rows = len(read_rows(data_dir / "train.parquet"))
    if rows < cfg.rl.train_batch_size:
        raise ConfigError(f"{data_dir / 'train.parquet'} has {rows} questions; rl.train_batch_size is {cfg.rl.train_batch_size}")
    if (output_dir / "model" / "config.json").is_file():
        echo(f"already trained: {output_dir / 'model'} (a new run needs another rl.output_dir)")
        return command
    with Reporting.of(cfg).live("rl", output_dir / "metrics.jsonl"):  # both engines' metrics, by the same names
        code = run_logged(command, output_dir / "train.log", {**os.environ, **env, **(venv_env(venv) if venv else {})}, echo)
    if code != 0:
        tail = log_tail(output_dir / "train.log")
        if "died with <Signals.SIGKILL" in tail:  # accelerate's traceback says nothing useful; say what happened
            raise WebdancerError(
                f"the TRL engine was killed (SIGKILL; the kernel's out-of-memory killer, if `dmesg` says so): lower "
                f"rl.micro_batch_size, rl.n_rollouts or rl.max_response_length, or free memory, then rerun: training "
                f"resumes from the last checkpoint in {output_dir / 'checkpoints'} (rl.save_freq={cfg.rl.save_freq})"
            )
        raise WebdancerError(f"the TRL engine exited with code {code}; last lines:\n" + tail)
    return command
