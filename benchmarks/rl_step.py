"""One-machine RL (TRL engine) on the tiny model: seconds per GRPO step, where they go, and generation speed.

Runs `webdancer rl train` with rl.engine=trl for a few steps (the quickstart's SFT checkpoint when it
exists, else the base model) against the offline web, once with each turn generator (rl.trl_rollouts:
`batched`, the continuous batching engine on a copy of the policy, and `generate`, the policy's own
`model.generate`), then reads metrics.jsonl. Ratios: the share of a step in generation, tools, reward
and the update; the engine's generation tokens/s against the CPU server's (`transformers serve`, one
client, as benchmarks/tiny_model_serving.py measures it; target >= 0.8) and against `model.generate`,
all in the same run on the same model. Needs what scripts/quickstart.sh leaves behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import OFFLINE, QUICKSTART_CONFIG, ROOT, Row, emit, offline_web, rl_model_and_questions
from tiny_model_serving import free_port, tokens_per_s

STEPS = int(os.environ.get("RL_BENCH_STEPS", "3"))


def server_tokens_per_s(model: Path) -> float:
    from webdancer_models.config import ServeConfig
    from webdancer_models.serve import served_model_name, start_server

    cfg = ServeConfig(backend="transformers", model_path=str(model), port=free_port(), health_timeout_s=300)
    with tempfile.TemporaryDirectory() as logs, start_server(cfg, Path(logs)) as server:
        return asyncio.run(tokens_per_s(server.base_url, served_model_name(cfg), 1))


def train_steps(model: Path, questions: Path, rollouts: str) -> list[dict]:
    """The metrics of STEPS steps of `webdancer rl train` (rl.engine=trl) with turns from `rollouts`."""
    webdancer = str(Path(sys.executable).parent / "webdancer")
    with tempfile.TemporaryDirectory() as tmp:
        run = ["-c", str(QUICKSTART_CONFIG), f"run.root={tmp}", "run.name=bench", "rl.engine=trl", f"rl.model_path={model}",
               "rl.val_fraction=0", f"rl.total_training_steps={STEPS}", "rl.train_batch_size=2", "rl.ppo_mini_batch_size=2",
               "rl.n_rollouts=4", "rl.max_turns=3", "rl.max_turn_tokens=256", "rl.filter_groups=false",
               f"rl.trl_rollouts={rollouts}"]
        subprocess.run([webdancer, "rl", "prepare", str(questions), *run], check=True, cwd=ROOT, env=OFFLINE, capture_output=True)
        with offline_web():
            proc = subprocess.run([webdancer, "rl", "train", *run], cwd=ROOT, env=OFFLINE, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(proc.stdout[-2000:] + proc.stderr[-2000:])
        return [json.loads(line) for line in (Path(tmp) / "bench/rl/metrics.jsonl").read_text().splitlines()]


def generation_rate(steps: list[dict]) -> float:
    """Tokens per second of generation over all `steps` (each step's rate weighted by its generation time)."""
    return sum(s["generate_tokens_per_s"] * s["time/generate_s"] for s in steps) / sum(s["time/generate_s"] for s in steps)


def main() -> None:
    model, questions = rl_model_and_questions()
    plain = train_steps(model, questions, "generate")
    steps = train_steps(model, questions, "batched")
    seconds = [s["seconds_per_step"] for s in steps]
    mean = statistics.fmean(seconds)
    plain_mean = statistics.fmean(s["seconds_per_step"] for s in plain)
    rows = [Row("rl_trl_step", f"seconds per step, batched turns (min {min(seconds):.0f}, max {max(seconds):.0f})", mean, "s", plain_mean / mean,
                f"model.generate's {plain_mean:.0f} s / this; {len(steps)} steps each, 2 q x 4 rollouts", "report", True)]
    for part in ("generate", "tools", "reward", "update"):
        share = statistics.fmean(s[f"time/{part}_s"] / s["seconds_per_step"] for s in steps)
        rows.append(Row("rl_trl_step", f"share of a step in {part}", share, "", share, "of the step", "report", True))
    engine, plain_engine = generation_rate(steps), generation_rate(plain)
    server = server_tokens_per_s(model)
    rows.append(Row("rl_trl_step", "engine generation (batched turns)", engine, "tok/s", engine / server,
                    f"vs transformers serve {server:.1f} tok/s", ">= 0.8", engine / server >= 0.8))
    rows.append(Row("rl_trl_step", "engine generation (model.generate turns)", plain_engine, "tok/s", engine / plain_engine,
                    "batched / this, same run", "report", True))
    emit(rows)


if __name__ == "__main__":
    main()
