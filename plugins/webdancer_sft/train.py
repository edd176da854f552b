"""`webdancer sft train`: write a complete LLaMA-Factory YAML and run the native `llamafactory-cli train`."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Callable, Optional

import yaml
from webdancer_models.export import install_wire_template

from webdancer.errors import ConfigError, WebdancerError
from webdancer.jsonl import atomic_write_text
from webdancer.launch import log_tail, run_logged, run_preflight, venv_bin, venv_env, write_command_script
from webdancer.tracking import Reporting
from webdancer_sft.config import SftConfig
from webdancer_sft.export import DATASET


def llamafactory_yaml(cfg: SftConfig, dataset_dir: Path, output_dir: Path, reporting: Optional[Reporting] = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "model_name_or_path": cfg.model_path,
        "stage": "sft",
        "do_train": True,
        "finetuning_type": cfg.finetuning_type,
        "dataset": DATASET,
        "dataset_dir": str(dataset_dir),
        "template": cfg.template,
        "cutoff_len": cfg.cutoff_len,
        "overwrite_cache": True,
        "preprocessing_num_workers": 1,
        "output_dir": str(output_dir),
        "logging_steps": cfg.logging_steps,
        "save_steps": cfg.save_steps,
        "plot_loss": True,
        "overwrite_output_dir": False,
        "per_device_train_batch_size": cfg.per_device_train_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "learning_rate": cfg.learning_rate,
        "num_train_epochs": cfg.num_train_epochs,
        "max_steps": cfg.max_steps,
        "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.0,
        **(reporting or Reporting()).settings,  # report_to, run_name, project: the run's tracker (`tracking`)
    }
    if cfg.finetuning_type == "lora":
        doc.update({"lora_rank": cfg.lora_rank, "lora_target": "all"})
    if cfg.use_cpu:
        doc["use_cpu"] = True
        if cpu_bf16_autocast(cfg) and not {"bf16", "fp16"} & set(cfg.extra):
            doc["bf16"] = True
    doc.update(cfg.extra)
    for key in FILE_KEYS:
        if doc.get(key):
            doc[key] = str(named_file(doc[key], f"sft.extra.{key}"))
    return doc


# LLaMA-Factory keys whose value is a file this machine must have (the trainer reads it at start).
FILE_KEYS = ("deepspeed",)


def named_file(value: str, key: str) -> Path:
    """A file a config names, absolute (the trainer may start elsewhere), or an error naming the key and the fix."""
    path = Path(value)
    if not path.is_file():
        shipped = sorted(p.name for p in (Path(__file__).resolve().parents[2] / "configs" / "deepspeed").glob("*.json"))
        raise ConfigError(f"{key}={value}: no such file (relative paths start from {Path.cwd()}); the DeepSpeed configs this "
                          f"project ships are configs/deepspeed/{{{','.join(shipped)}}}")
    return path.resolve()


def launch_vars(cfg: SftConfig) -> dict[str, str]:
    """What `llamafactory-cli train` is launched with, besides its environment's PATH: offline hub, and FORCE_TORCHRUN
    with DeepSpeed (LLaMA-Factory refuses DeepSpeed outside torchrun, which it uses by itself only with several GPUs)."""
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DISABLE_VERSION_CHECK": "1"}
    if cfg.extra.get("deepspeed"):
        env["FORCE_TORCHRUN"] = "1"
    return env


def launch_env(cfg: SftConfig) -> dict[str, str]:
    """launch_vars, with the SFT environment first on PATH (LLaMA-Factory starts `torchrun` by name on a node with
    several GPUs)."""
    return {**launch_vars(cfg), **venv_env(Path(cfg.venv))}


def cpu_bf16_autocast(cfg: SftConfig) -> bool:
    """Whether a CPU training runs under bf16 autocast (`sft.cpu_autocast`)."""
    from webdancer_models.cpu_linear import bf16_supported

    return cfg.cpu_autocast == "bf16" or (cfg.cpu_autocast == "auto" and bf16_supported())


def cli_path(venv: str, must_exist: bool = True) -> Path:
    path = venv_bin(Path(venv)) / "llamafactory-cli"
    if must_exist and not path.is_file():
        raise WebdancerError(f"{path} not found: run `bash scripts/setup_sft.sh` (WEBDANCER_SFT_GPU=1 on a GPU machine) or set sft.venv "
                             "to an environment with llamafactory")
    return path


def write_launch(cfg: SftConfig, dataset_dir: Path, output_dir: Path, reporting: Reporting, must_exist: bool = True) -> list[str]:
    """The LLaMA-Factory YAML and `command.sh` in `output_dir`; returns the command."""
    output_dir.mkdir(parents=True, exist_ok=True)
    config_file = output_dir / "llamafactory_train.yaml"
    atomic_write_text(config_file, yaml.safe_dump(llamafactory_yaml(cfg, dataset_dir, output_dir, reporting), sort_keys=False))
    command = [str(cli_path(cfg.venv, must_exist)), "train", str(config_file.resolve())]
    env = launch_vars(cfg)
    write_command_script(output_dir / "command.sh", command, "SFT with LLaMA-Factory; on a multi-node cluster set NNODES, NODE_RANK, "
                         "MASTER_ADDR and MASTER_PORT on each node.", {**env, **reporting.env}, Path(cfg.venv))
    return command


def preflight(cfg: SftConfig, command: list[str], model: Optional[str] = None) -> dict[str, Any]:
    """LLaMA-Factory's own checks of the written YAML (webdancer_sft/preflight.py) in its environment, launched as its
    launcher would launch training (torchrun when launch_env sets FORCE_TORCHRUN); a refusal is an error."""
    python = str(venv_bin(Path(cfg.venv)) / "python")
    env = {**os.environ, **launch_env(cfg)}
    script = [str(Path(__file__).with_name("preflight.py")), command[-1], *(["--model", model] if model else [])]
    torchrun = [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"] if env.get("FORCE_TORCHRUN") == "1" else [python]
    return run_preflight([*torchrun, *script], env, "LLaMA-Factory refuses")


def check_model_folder(cfg: SftConfig) -> None:
    if not (Path(cfg.model_path) / "config.json").is_file():
        raise ConfigError(f"sft.model_path={cfg.model_path} is not a Hugging Face model folder on this machine (no config.json); "
                          "nothing is downloaded from a hub at run time")


def run_training(cfg: SftConfig, dataset_dir: Path, output_dir: Path, echo: Callable[[str], None] = print,
                 reporting: Optional[Reporting] = None) -> dict[str, Any]:
    """Write the YAML and the exact command beside the outputs, run it, return the loss log."""
    reporting = reporting or Reporting()
    reporting.check(str(Path(cfg.venv) / "bin" / "python"), f"the SFT environment {cfg.venv}")  # before anything runs
    check_model_folder(cfg)
    if not (dataset_dir / "dataset_info.json").is_file():
        raise WebdancerError(f"{dataset_dir} has no dataset_info.json: run `webdancer sft export TRAJ_FILE {dataset_dir}` first")
    if (output_dir / "trainer_state.json").exists():
        raise WebdancerError(f"{output_dir} already holds a finished training; choose another sft.output_dir (nothing is overwritten)")
    report = inspect_dataset(cfg, dataset_dir)
    if report["kept"] < report["in_file"]:
        raise WebdancerError(
            f"LLaMA-Factory kept {report['kept']} of {report['in_file']} examples of {dataset_dir} (it skips malformed ones "
            f"with only a warning); re-export, or raise sft.cutoff_len ({cfg.cutoff_len})"
        )
    echo(f"LLaMA-Factory accepts all {report['kept']} examples; {sum(e['trained_tokens'] for e in report['examples'])} "
         f"of {sum(e['tokens'] for e in report['examples'])} tokens are trained on (observations, prompts masked)")
    command = write_launch(cfg, dataset_dir, output_dir, reporting)
    env = {**os.environ, **launch_env(cfg), **reporting.env}
    with reporting.live("sft", output_dir / "trainer_log.jsonl", step_key="current_steps"):  # LLaMA-Factory's per-step log
        code = run_logged(command, output_dir / "train.log", env, echo)
    if code != 0:
        raise WebdancerError(f"llamafactory-cli train exited with code {code}; last lines:\n" + log_tail(output_dir / "train.log"))
    prefix = install_wire_template(output_dir)
    if prefix is not None:  # e.g. QwQ (drops earlier thoughts) or Qwen3 (rewrites them): RL and serving must see what SFT trained on
        echo(f"the base model's chat template re-renders earlier turns; {output_dir} now carries the wire template "
             f"(generation prefix {prefix!r})")
    return {"losses": training_losses(output_dir), "command": command}


def training_losses(output_dir: Path) -> list[float]:
    log = output_dir / "trainer_log.jsonl"
    if not log.is_file():
        return []
    return [json.loads(line)["loss"] for line in log.read_text().splitlines() if line.strip() and "loss" in json.loads(line)]




def inspect_dataset(cfg: SftConfig, dataset_dir: Path) -> dict[str, Any]:
    """What LLaMA-Factory's own loader builds from the export: kept examples, full and trained text."""
    python = Path(cfg.venv) / "bin" / "python"
    if not python.is_file():
        raise WebdancerError(f"{python} not found: run `bash scripts/setup_sft.sh`")
    script = Path(__file__).with_name("inspect_dataset.py")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DISABLE_VERSION_CHECK": "1"}
    proc = subprocess.run(
        [str(python), str(script), cfg.model_path, str(dataset_dir), cfg.template, str(cfg.cutoff_len)],
        capture_output=True, text=True, env=env,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("WEBDANCER_INSPECT "):
            return json.loads(line[len("WEBDANCER_INSPECT "):])
    raise WebdancerError(f"LLaMA-Factory could not load {dataset_dir}:\n" + "\n".join((proc.stderr or proc.stdout).splitlines()[-15:]))
