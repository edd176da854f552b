"""TRL's rollouts on the CPU: our batched engine (rl.trl_rollouts=batched, the CPU's default) against TRL's colocated
vLLM (rl.trl_rollouts=vllm), in one run, alternating.

Runs `webdancer rl train` (the TRL engine, rl_step.py's settings: 2 questions x 4 rollouts, up to 3 turns of 256
tokens, RL_BENCH_STEPS steps, the quickstart's SFT checkpoint) with each engine, RL_BENCH_ROUNDS rounds, and reads
metrics.jsonl and the command's wall time. Ratios, batched / vLLM: seconds per step, per generation and per update
(vLLM adds a forward pass of every rollout to the update: TRL's importance-sampling correction), start-up (the
command's wall time less its steps: loading, and vLLM's engine and compilation), and generation tokens/s vLLM /
batched. Needs what scripts/quickstart.sh leaves behind, .venvs/vllm, and the machine to itself (~25 minutes).
"""

from __future__ import annotations

import os
import statistics
import time

from _common import Row, emit, rl_model_and_questions
from rl_step import STEPS, generation_rate, spread, train_steps

ROUNDS = int(os.environ.get("RL_BENCH_ROUNDS", "2"))
ENGINES = ("batched", "vllm")


def main() -> None:
    model, questions = rl_model_and_questions()
    steps: dict[str, list[dict]] = {e: [] for e in ENGINES}
    startup: dict[str, list[float]] = {e: [] for e in ENGINES}
    for _ in range(ROUNDS):
        for engine in ENGINES:
            started = time.perf_counter()
            run = train_steps(model, questions, rollouts=engine)
            startup[engine].append(time.perf_counter() - started - sum(s["seconds_per_step"] for s in run))
            steps[engine] += run
    shape = f"{ROUNDS} rounds x {STEPS} steps, 2 q x 4 rollouts, 3 turns"
    rows = []
    for key, label in (("seconds_per_step", "seconds per step"), ("time/generate_s", "seconds generating per step"),
                       ("time/update_s", "seconds updating per step")):
        ours, vllm = ([s[key] for s in steps[e]] for e in ENGINES)
        ratio = statistics.fmean(ours) / statistics.fmean(vllm)
        rows.append(Row("rl_rollout_engines", f"{label} (batched {spread(ours)}, vLLM {spread(vllm)})", statistics.fmean(vllm), "s",
                        ratio, f"batched / vLLM; {shape}", "report", True))
    ours, vllm = statistics.fmean(startup["batched"]), statistics.fmean(startup["vllm"])
    rows.append(Row("rl_rollout_engines", f"start-up (batched {spread(startup['batched'])}, vLLM {spread(startup['vllm'])})", vllm, "s",
                    ours / vllm, "batched / vLLM: the command's wall time less its steps", "report", True))
    ours, vllm = generation_rate(steps["batched"]), generation_rate(steps["vllm"])
    rows.append(Row("rl_rollout_engines", "generation tokens/s", vllm, "tok/s", vllm / ours, f"vLLM / batched ({ours:.1f} tok/s)", "report", True))
    ratios = [s["importance_ratio/min"] for s in steps["vllm"]] + [s["importance_ratio/max"] for s in steps["vllm"]]
    rows.append(Row("rl_rollout_engines", "vLLM importance ratios, furthest from 1", max(abs(r - 1) for r in ratios), "", min(ratios),
                    f"min {min(ratios):.4f}, max {max(ratios):.4f}: vLLM samples from the policy", "within 0.01 of 1",
                    max(abs(r - 1) for r in ratios) < 0.01))
    emit(rows)


if __name__ == "__main__":
    main()
