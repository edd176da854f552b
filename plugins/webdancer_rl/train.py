"""`webdancer rl train`: the native `python -m verl.trainer.main_ppo` command with DAPO settings.

Everything is a hydra override of verl's own `ppo_trainer` config, so the command recorded in
`command.sh` runs unchanged on a Ray cluster with the same files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from webdancer.config import WebdancerConfig
from webdancer.errors import ConfigError, WebdancerError
from webdancer.launch import log_tail, run_logged, write_command_script
from webdancer_rl.reward import DEFAULT_WEIGHTS, reward_config

REWARD_MODULE = Path(__file__).with_name("reward.py")


def _value(v) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_value(x) for x in v) + "]"
    return str(v)


def default_model_path(cfg: WebdancerConfig) -> str:
    if cfg.rl.model_path:
        return cfg.rl.model_path
    sft = Path(cfg.sft.output_dir or cfg.run.dir / "sft")
    return str(sft) if (sft / "config.json").is_file() else cfg.sft.model_path


def verl_overrides(cfg: WebdancerConfig, data_dir: Path, output_dir: Path) -> list[str]:
    """verl config overrides for a DAPO run with our data, tools, agent loop and reward."""
    rl = cfg.rl
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
        ("actor_rollout_ref.model.path", default_model_path(cfg)),
        ("actor_rollout_ref.actor.optim.lr", rl.learning_rate),
        ("actor_rollout_ref.actor.ppo_mini_batch_size", rl.ppo_mini_batch_size),
        ("actor_rollout_ref.actor.clip_ratio_low", rl.clip_ratio_low),
        ("actor_rollout_ref.actor.clip_ratio_high", rl.clip_ratio_high),
        ("actor_rollout_ref.actor.loss_agg_mode", rl.loss_agg_mode),
        ("actor_rollout_ref.actor.use_kl_loss", rl.use_kl_loss),
        ("actor_rollout_ref.rollout.name", rl.rollout_engine),
        ("actor_rollout_ref.rollout.mode", "async"),
        ("actor_rollout_ref.rollout.n", rl.n_rollouts),
        ("actor_rollout_ref.rollout.temperature", rl.temperature),
        ("actor_rollout_ref.rollout.tensor_model_parallel_size", rl.tensor_parallel),
        ("actor_rollout_ref.rollout.gpu_memory_utilization", rl.gpu_memory_utilization),
        ("actor_rollout_ref.rollout.multi_turn.enable", True),
        ("actor_rollout_ref.rollout.multi_turn.max_assistant_turns", rl.max_turns),
        ("actor_rollout_ref.rollout.multi_turn.max_tool_response_length", rl.max_tool_response_length),
        ("actor_rollout_ref.rollout.multi_turn.format", "webdancer"),
        ("actor_rollout_ref.rollout.multi_turn.tool_config_path", data_dir / "tool_config.yaml"),
        ("actor_rollout_ref.rollout.agent.default_agent_loop", "webdancer_agent"),
        ("actor_rollout_ref.rollout.agent.agent_loop_config_path", data_dir / "agent_loops.yaml"),
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
        ("trainer.save_freq", rl.save_freq),
        ("trainer.test_freq", rl.test_freq),
        ("trainer.val_before_train", False),
        ("trainer.logger", rl.logger),
        ("trainer.project_name", "webdancer"),
        ("trainer.experiment_name", cfg.run.name),
        ("trainer.default_local_dir", output_dir / "checkpoints"),
    ]
    out = [f"{k}={_value(v)}" for k, v in pairs]
    # Keys verl reads but does not declare: added with hydra's `+`.
    weights = cfg.rewards or DEFAULT_WEIGHTS
    out += [f"+reward.custom_reward_function.reward_kwargs.weights.{name}={w}" for name, w in weights.items()]
    for name, options in (cfg.reward_options or {}).items():
        out += [f"+reward.custom_reward_function.reward_kwargs.options.{name}.{k}={_value(v)}" for k, v in options.items()]
    out += [
        f"+reward.reward_kwargs.overlong_buffer_cfg.enable={rl.overlong_buffer > 0}",
        f"+reward.reward_kwargs.overlong_buffer_cfg.len={max(rl.overlong_buffer, 1)}",
        f"+reward.reward_kwargs.overlong_buffer_cfg.penalty_factor={rl.overlong_penalty}",
        "+reward.reward_kwargs.overlong_buffer_cfg.log=True",
        f"+reward.reward_kwargs.max_resp_len={rl.max_response_length}",
    ]
    return out + list(rl.extra)


def gpu_visible() -> bool:
    import subprocess

    try:
        return subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def check_rewards(cfg: WebdancerConfig) -> None:
    """Validate `rewards` and `reward_options` here, before verl starts, not in its reward workers."""
    weights = cfg.rewards or DEFAULT_WEIGHTS
    for name in cfg.reward_options or {}:
        if name not in weights:
            raise ConfigError(f"reward_options.{name} is set but `rewards` has no {name!r} (rewards: {', '.join(weights)})")
    for name in weights:
        reward_config(name, cfg.reward_options)


def verl_command(cfg: WebdancerConfig, data_dir: Path, output_dir: Path) -> list[str]:
    python = Path(cfg.rl.venv) / "bin" / "python"
    return [str(python), "-m", "verl.trainer.main_ppo", *verl_overrides(cfg, data_dir, output_dir)]


def run_rl(cfg: WebdancerConfig, data_dir: Path, output_dir: Path, echo: Callable[[str], None] = print, dry_run: bool = False) -> list[str]:
    """Record the command (always), then run it unless `dry_run`; returns the command."""
    missing = [name for name in ("train.parquet", "val.parquet", "tool_config.yaml", "agent_loops.yaml") if not (data_dir / name).is_file()]
    if missing and not dry_run:
        raise WebdancerError(f"{data_dir / missing[0]} is missing: run `webdancer rl prepare QA_FILE` first")
    check_rewards(cfg)
    command = verl_command(cfg, data_dir, output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    write_command_script(output_dir / "command.sh", command, "DAPO with verl; on a cluster: start Ray, then run this from the repository root.", env)
    if dry_run:
        return command
    if not gpu_visible() and not os.environ.get("RAY_ADDRESS"):
        # Seen with verl 0.9.1 on a CPU machine: its ResourcePoolManager refuses ("Total available
        # GPUs 0 is less than total desired GPUs 1") even with trainer.device=cpu, and on a 2-CPU
        # Ray node it first waits forever for TransferQueue's storage actors.
        raise WebdancerError(
            "verl's trainer needs a GPU and none is visible here (nvidia-smi) nor is RAY_ADDRESS set: "
            f"run on a GPU machine, point RAY_ADDRESS at a Ray cluster with GPUs, or run {output_dir / 'command.sh'} there"
        )
    if not Path(command[0]).is_file():
        raise WebdancerError(f"{command[0]} not found: run `bash scripts/setup_rl.sh` (WEBDANCER_RL_GPU=1 on a GPU machine) or set rl.venv")
    code = run_logged(command, output_dir / "train.log", {**os.environ, **env}, echo)
    if code != 0:
        raise WebdancerError(f"verl exited with code {code}; last lines:\n" + log_tail(output_dir / "train.log"))
    return command
