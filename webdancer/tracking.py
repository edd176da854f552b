"""Experiment tracking with one setting (`tracking`) for every stage and one run name (`run.name`).

SFT and RL report through their trainers' own integrations (LLaMA-Factory's and TRL's `report_to`,
verl's `trainer.logger`), given the same project, run name and storage folder. webdancer's own
stages (sample, filter, eval, the pipeline) log their numbers here, prefixed by stage (e.g.
`eval/after/pass_at_1`), to the same run. Keys are read by each backend from the environment;
nothing secret is in the config it logs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from webdancer.config import TrackingConfig, WebdancerConfig
from webdancer.console import library_output
from webdancer.errors import ConfigError
from webdancer.jsonl import following, iter_json_lines

log = logging.getLogger(__name__)

# backend -> the package that provides it (what to `pip install`).
PACKAGES = {"trackio": "trackio", "wandb": "wandb", "swanlab": "swanlab", "tensorboard": "tensorboard", "mlflow": "mlflow"}


def tracking_dir(cfg: WebdancerConfig) -> Path:
    return Path(cfg.tracking.dir or Path(cfg.run.root) / "tracking").resolve()


def check_installed(tracking: TrackingConfig, python: Optional[str] = None, where: str = "this environment") -> None:
    """The backend's package must be importable (in `python`'s environment when given): else an error naming it."""
    if tracking.backend == "none":
        return
    package = PACKAGES[tracking.backend]
    if python is None:
        found = importlib.util.find_spec(package) is not None
    else:
        import subprocess

        probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({package!r}) is None)"
        found = subprocess.run([python, "-c", probe], capture_output=True).returncode == 0
    if not found:
        raise ConfigError(f"tracking.backend={tracking.backend}: the package {package!r} is not installed in {where}; "
                          f"`{python or 'python'} -m pip install {package}`, or set tracking.backend=none")


def tracking_env(cfg: WebdancerConfig) -> dict[str, str]:
    """Environment for a trainer's process so its integration writes where ours does, under the same project and run."""
    folder = tracking_dir(cfg)
    backend = cfg.tracking.backend
    if backend == "none":
        return {}
    env = {"TRACKIO_DIR": str(folder / "trackio"), "TRACKIO_PROJECT": cfg.tracking.project, "WANDB_PROJECT": cfg.tracking.project,
           "WANDB_DIR": str(folder), "WANDB_NAME": cfg.run.name, "SWANLAB_PROJ_NAME": cfg.tracking.project,
           "SWANLAB_LOG_DIR": str(folder / "swanlab"), "MLFLOW_TRACKING_URI": (folder / "mlruns").as_uri(),
           "MLFLOW_EXPERIMENT_NAME": cfg.tracking.project, "TENSORBOARD_DIR": str(folder / "tensorboard" / cfg.run.name)}
    return env


@dataclass
class Reporting:
    """How a trainer reports: trackio is fed from the trainer's own log by this process (so the trainers'
    environments need no tracker, and both RL engines give the same metric names); any other backend through
    the trainer's own integration (its TrainingArguments fields or verl's logger, in the trainer's environment)."""

    cfg: Optional[WebdancerConfig] = None

    @classmethod
    def of(cls, cfg: WebdancerConfig) -> "Reporting":
        return cls(cfg)

    @property
    def native(self) -> bool:
        """True when the trainer itself reports (a backend other than trackio and none)."""
        return self.cfg is not None and self.cfg.tracking.backend not in ("none", "trackio")

    @property
    def settings(self) -> dict[str, Any]:
        """transformers TrainingArguments fields (LLaMA-Factory's YAML, TRL's GRPOConfig)."""
        if not self.native:
            return {"report_to": "none"}
        cfg = self.cfg
        return {"report_to": cfg.tracking.backend, "run_name": cfg.run.name, "project": cfg.tracking.project,
                **({"logging_dir": str(tracking_dir(cfg) / "tensorboard" / cfg.run.name)} if cfg.tracking.backend == "tensorboard" else {})}

    @property
    def env(self) -> dict[str, str]:
        return tracking_env(self.cfg) if self.native else {}

    def check(self, python: Optional[str], where: str) -> None:
        """Before a trainer starts: its environment has the backend's package when it reports itself."""
        if self.native:
            check_installed(self.cfg.tracking, python, where)

    @property
    def relays(self) -> bool:
        """True when this process feeds the trainer's log to trackio."""
        return self.cfg is not None and self.cfg.tracking.backend == "trackio"

    def relay(self, stage: str, log_file: Path, step_key: str = "step") -> int:
        """Feed trackio the rows of a trainer's JSONL log not relayed before (a rerun adds only new steps). A last
        line still being written (no newline yet) waits for the next call."""
        if not self.relays or not log_file.is_file():
            return 0
        marker = log_file.with_name(log_file.name + ".tracked")
        done = int(marker.read_text()) if marker.is_file() else 0
        rows = [row for _, row in iter_json_lines(log_file)]
        new = [row for row in rows if isinstance(row.get(step_key), int) and row[step_key] > done]
        if new:
            with Tracker(self.cfg) as tracker:
                for row in new:
                    tracker.log(stage, {k: v for k, v in row.items() if k != step_key}, step=row[step_key])
            marker.write_text(str(max(row[step_key] for row in new)))
        return len(new)

    @contextlib.contextmanager
    def live(self, stage: str, log_file: Path, step_key: str = "step", every_s: float = 10.0) -> Iterator[None]:
        """While the trainer runs, relay its new log rows every `every_s` (a dashboard follows training as it goes),
        and once more when it ends. A tracker that fails is logged as a warning and never stops the training."""
        if not self.relays:
            yield
            return
        with following(log_file, lambda: self.relay(stage, log_file, step_key), every_s):
            yield


class Tracker:
    """webdancer's own stages' numbers, logged to the run `run.name` of project `tracking.project` (trackio)."""

    def __init__(self, cfg: WebdancerConfig):
        self.cfg = cfg
        self.backend = cfg.tracking.backend
        self._trackio: Any = None
        if self.backend not in ("none", "trackio"):
            log.info("tracking.backend=%s: SFT and RL report to it; sample, filter and eval numbers go to their reports only",
                     self.backend)

    def log(self, stage: str, metrics: dict[str, Any], step: Optional[int] = None) -> None:
        """Numbers of `metrics` (nested dicts flattened with `/`) as `<stage>/<name>`; other values are left out."""
        if self.backend != "trackio":
            return
        flat = {f"{stage}/{k}": v for k, v in _flatten(metrics).items()}
        if not flat:
            return
        if self._trackio is None:
            check_installed(self.cfg.tracking)
            os.environ.setdefault("TRACKIO_DIR", str(tracking_dir(self.cfg) / "trackio"))
            import trackio

            with library_output("tracking"):  # its banners are not this command's output (shown with -vv)
                trackio.init(project=self.cfg.tracking.project, name=self.cfg.run.name, resume="allow", embed=False,
                             auto_log_cpu=False, auto_log_gpu=False)
            self._trackio = trackio
        self._trackio.log(flat, step=step)

    def finish(self) -> None:
        if self._trackio is not None:
            with library_output("tracking"):
                self._trackio.finish()
            self._trackio = None

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()


def track(cfg: WebdancerConfig, stage: str, metrics: dict[str, Any]) -> None:
    """Log one stage's numbers (`Tracker` for the length of one call)."""
    with Tracker(cfg) as tracker:
        tracker.log(stage, metrics)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            out[name] = float(value)
        elif isinstance(value, (int, float)):
            out[name] = value
        elif isinstance(value, dict):
            out.update(_flatten(value, f"{name}/"))
    return out
