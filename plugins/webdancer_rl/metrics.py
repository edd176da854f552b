"""RL metrics under one set of names for both engines, one line per step in `runs/<run>/rl/metrics.jsonl`.

The TRL engine computes them from its rollouts; for verl, `from_verl` renames what verl's file
logger writes. The alarms (webdancer_rl.alarms) read these names too.
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import fmean
from typing import Any, Callable, Optional

from webdancer.jsonl import JsonlAppender, atomic_write_text, iter_json_lines
from webdancer_rl.rollout_stats import rollout_means, step_metrics

# What verl logs (verl/trainer/ppo/metric_utils.py, 0.9.1) -> our name.
VERL_NAMES = {
    "critic/score/mean": "reward/mean",
    "response_length/mean": "response_length/mean",
    "num_turns/mean": "messages/mean",
    "timing_s/step": "seconds_per_step",
    "timing_s/gen": "time/generate_s",
    "actor/pg_loss": "loss",
    "actor/grad_norm": "grad_norm",
    "actor/lr": "learning_rate",
    "actor/entropy": "entropy",
    "actor/pg_clipfrac": "clip_ratio",
}
# What TRL's GRPOTrainer logs -> our name.
TRL_NAMES = {"loss": "loss", "grad_norm": "grad_norm", "learning_rate": "learning_rate", "entropy": "entropy",
             "clip_ratio/region_mean": "clip_ratio",
             # with vLLM rollouts: the policy's probability of each sampled token over vLLM's (per sequence), and the
             # largest log-prob difference; near 1 and 0 when vLLM samples from the policy being trained
             "sampling/importance_sampling_ratio/min": "importance_ratio/min",
             "sampling/importance_sampling_ratio/mean": "importance_ratio/mean",
             "sampling/importance_sampling_ratio/max": "importance_ratio/max",
             "sampling/sampling_logp_difference/max": "sampler_logp_diff/max"}


def batch_metrics(rollouts: list[Any], scores: list[dict[str, float]], reward_names: list[str], kept: list[bool]) -> dict[str, float]:
    """Means over one batch of rollouts (webdancer_rl.rollout.TokenRollout) and their compute_score results."""
    out = {
        "reward/mean": fmean(s["reward"] for s in scores),
        "reward/overlong/mean": fmean(s["overlong"] for s in scores),
        "judge_failed/mean": fmean(s.get("judge_failed", 0.0) for s in scores),
        **rollout_means([r.stats() for r in rollouts]),
        "filtered_groups": 1.0 - fmean(kept) if kept else 0.0,
    }
    for name in reward_names:
        out[f"reward/{name}/mean"] = fmean(s[name] for s in scores)
    return out


def from_verl(record: dict[str, Any]) -> dict[str, Any]:
    """One line of verl's file logger ({"step", "data": {...}}) in our names; reward components as verl names them."""
    data = record.get("data", {})
    out: dict[str, Any] = {"step": record.get("step")}
    for key, value in data.items():
        if key in VERL_NAMES:
            out[VERL_NAMES[key]] = value
    return out


def add_verl_metrics(verl_log: Path, metrics: Path, check: Optional[Callable[[dict[str, Any]], list[str]]] = None,
                     stats: Optional[Path] = None) -> int:
    """Append the steps of verl's file log not yet in metrics.jsonl, in our names, with what our workers recorded of
    that step's rollouts in `stats` (webdancer_rl.rollout_stats: tool calls, answered rate, reward components, held-out
    reward), each with the `alarms` that `check` finds in it (webdancer_rl.alarms.Alarms.check); returns how many."""
    if not verl_log.is_file():
        return 0
    done = {obj.get("step") for _, obj in iter_json_lines(metrics)} if metrics.is_file() else set()
    new = [row for row in (from_verl(record) for _, record in iter_json_lines(verl_log)) if row["step"] is not None and row["step"] not in done]
    if not new:
        return 0
    ours = step_metrics(stats) if stats is not None and stats.is_dir() else {}
    out = JsonlAppender(metrics, key=lambda r: r["step"])
    added = 0
    try:
        for row in new:
            if row["step"] in done:
                continue
            row.update(ours.get(row["step"], {}))
            if check:
                row["alarms"] = check(row)
            out.write(row)
            done.add(row["step"])
            added += 1
    finally:
        out.close()
    return added


class MetricsLog:
    """Appends lines keyed by step; a resumed run first drops the lines of steps after its checkpoint."""

    def __init__(self, path: Path, resume_step: int = 0, key: Optional[Callable[[dict[str, Any]], Any]] = lambda r: r["step"]):
        if path.exists():
            kept = [obj for _, obj in iter_json_lines(path) if obj.get("step", 0) <= resume_step]
            atomic_write_text(path, "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in kept))
        self._out = JsonlAppender(path, key=key or (lambda r: None))

    def write(self, record: dict[str, Any]) -> None:
        self._out.write(record)

    def close(self) -> None:
        self._out.close()


def progress_line(m: dict[str, Any], total: int, reward_names: list[str]) -> str:
    parts = ", ".join(f"{n} {m.get(f'reward/{n}/mean', float('nan')):.2f}" for n in reward_names)
    return (f"step {m['step']}/{total}  reward {m.get('reward/mean', float('nan')):.3f} ({parts})  "
            f"len {m.get('response_length/mean', 0):.0f}  valid {m.get('valid_turn_rate', 0):.2f}  "
            f"tools {m.get('tool_calls/mean', 0):.1f}  filtered {m.get('filtered_groups', 0):.2f}  "
            f"loss {m.get('loss', float('nan')):.4f}  {m.get('seconds_per_step', 0):.1f} s"
            + (f"  held-out reward {m['heldout/reward/mean']:.3f}" if "heldout/reward/mean" in m else "")
            + (f"  ALARM {', '.join(m['alarms'])}" if m.get("alarms") else ""))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [obj for _, obj in iter_json_lines(path)] if path.is_file() else []


def reward_trend(path: Path, window: int = 5) -> dict[str, Any]:
    """Steps run and the mean training reward of the first and last `window` steps (the learning signal)."""
    rows = [r for r in read_metrics(path) if "reward/mean" in r]
    if not rows:
        return {"steps": 0}
    first, last = rows[:window], rows[-window:]
    return {"steps": len(rows), "reward_first": round(fmean(r["reward/mean"] for r in first), 4),
            "reward_last": round(fmean(r["reward/mean"] for r in last), 4),
            "valid_turn_rate_last": round(fmean(r.get("valid_turn_rate", 0.0) for r in last), 4),
            "seconds_per_step": round(fmean(r.get("seconds_per_step", 0.0) for r in rows), 1)}
