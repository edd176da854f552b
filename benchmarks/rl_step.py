"""One-machine RL (TRL engine) on the tiny model: seconds per GRPO step against an earlier commit's, and where they go.

Runs `webdancer rl train` with rl.engine=trl for a few steps (the quickstart's SFT checkpoint when it exists, else
the base model) against the offline web, with this checkout's code and config and then with RL_BENCH_BASELINE's
(a git ref, default 004e898: before the lean update of webdancer_rl.trl_update), same questions, rollouts, turns and
seed, then reads metrics.jsonl. Ratios: baseline seconds per step (and per update) / this checkout's (target: 2,
the step halved); the share of a step in generation, tools, reward and the update; the engine's generation tokens/s
against the CPU server's (`transformers serve`, one client; target >= 0.8). Needs what scripts/quickstart.sh leaves
behind, and the machine to itself (~20 minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from _common import OFFLINE, QUICKSTART_CONFIG, ROOT, Row, emit, offline_web, rl_model_and_questions
from tiny_model_serving import free_port, tokens_per_s

STEPS = int(os.environ.get("RL_BENCH_STEPS", "3"))


def server_tokens_per_s(model: Path) -> float:
    from webdancer_models.config import ServeConfig
    from webdancer_models.serve import served_model_name, start_server

    cfg = ServeConfig(backend="transformers", model_path=str(model), port=free_port(), health_timeout_s=300)
    with tempfile.TemporaryDirectory() as logs, start_server(cfg, Path(logs)) as server:
        return asyncio.run(tokens_per_s(server.base_url, served_model_name(cfg), 1))


@contextlib.contextmanager
def checkout(ref: str) -> Iterator[Path]:
    """`ref`'s tree in a temporary git worktree (its code runs first on PYTHONPATH, with its configs)."""
    folder = Path(tempfile.mkdtemp(prefix="rl-baseline-"))
    subprocess.run(["git", "worktree", "add", "--detach", "--force", str(folder), ref], cwd=ROOT, check=True, capture_output=True)
    try:
        yield folder
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=ROOT, capture_output=True)


def train_steps(model: Path, questions: Path, code: Path = ROOT, rollouts: str = "batched") -> list[dict]:
    """The metrics of STEPS steps of `webdancer rl train` (rl.engine=trl, turns from `rollouts`: rl.trl_rollouts) with
    `code`'s tree."""
    webdancer = str(Path(sys.executable).parent / "webdancer")
    env = OFFLINE if code == ROOT else dict(OFFLINE, PYTHONPATH=f"{code}{os.pathsep}{code / 'plugins'}")
    with tempfile.TemporaryDirectory() as tmp:
        run = ["-c", str(code / QUICKSTART_CONFIG.relative_to(ROOT)), f"run.root={tmp}", "run.name=bench", "rl.engine=trl",
               f"rl.model_path={model}", "rl.val_fraction=0", f"rl.total_training_steps={STEPS}", "rl.train_batch_size=2",
               "rl.ppo_mini_batch_size=2", "rl.n_rollouts=4", "rl.max_turns=3", "rl.max_turn_tokens=256", "rl.filter_groups=false",
               f"rl.trl_rollouts={rollouts}", f"web.root={ROOT / '.webdancer/web'}", f"tools.search.web_root={ROOT / '.webdancer/web'}"]
        subprocess.run([webdancer, "rl", "prepare", str(questions), *run], check=True, cwd=code, env=env, capture_output=True)
        with offline_web():
            proc = subprocess.run([webdancer, "rl", "train", *run], cwd=code, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(proc.stdout[-2000:] + proc.stderr[-2000:])
        return [json.loads(line) for line in (Path(tmp) / "bench/rl/metrics.jsonl").read_text().splitlines()]


def generation_rate(steps: list[dict]) -> float:
    """Tokens per second of generation over all `steps` (each step's rate weighted by its generation time)."""
    return sum(s["generate_tokens_per_s"] * s["time/generate_s"] for s in steps) / sum(s["time/generate_s"] for s in steps)


def spread(values: list[float]) -> str:
    return f"{min(values):.0f}-{max(values):.0f}"


def main() -> None:
    model, questions = rl_model_and_questions()
    ref = os.environ.get("RL_BENCH_BASELINE", "004e898")
    with checkout(ref) as code:
        before = train_steps(model, questions, code)
    steps = train_steps(model, questions)
    seconds, old = [s["seconds_per_step"] for s in steps], [s["seconds_per_step"] for s in before]
    update, old_update = [s["time/update_s"] for s in steps], [s["time/update_s"] for s in before]
    mean, old_mean = statistics.fmean(seconds), statistics.fmean(old)
    shape = f"{len(steps)} steps each, 2 q x 4 rollouts, 3 turns"
    rows = [Row("rl_trl_step", f"seconds per step (this {spread(seconds)}, {ref} {spread(old)})", mean, "s", old_mean / mean,
                f"{ref}'s {old_mean:.0f} s / this; {shape}", ">= 2", old_mean / mean >= 2),
            Row("rl_trl_step", f"seconds per update (this {spread(update)}, {ref} {spread(old_update)})", statistics.fmean(update), "s",
                statistics.fmean(old_update) / statistics.fmean(update), f"{ref}'s {statistics.fmean(old_update):.0f} s / this", "report", True)]
    for part in ("generate", "tools", "reward", "update"):
        share = statistics.fmean(s[f"time/{part}_s"] / s["seconds_per_step"] for s in steps)
        rows.append(Row("rl_trl_step", f"share of a step in {part}", share, "", share, "of the step", "report", True))
    engine = generation_rate(steps)
    server = server_tokens_per_s(model)
    rows.append(Row("rl_trl_step", "engine generation (batched turns)", engine, "tok/s", engine / server,
                    f"vs transformers serve {server:.1f} tok/s", ">= 0.8", engine / server >= 0.8))
    emit(rows)


if __name__ == "__main__":
    main()
