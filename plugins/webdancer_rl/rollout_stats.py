"""What each rollout did (turns, tool calls, how it ended), under one set of metric names for both engines.

The TRL engine computes its step metrics from its own rollouts (`TokenRollout.stats()`). verl 0.9.1 logs per training
step only its own numbers (scores, lengths, turns): no tool calls, no answered rate, no reward components (its
`reward_extra_info` reaches validation metrics only), so most training-health alarms could not fire on a verl run.
With WEBDANCER_ROLLOUT_STATS set (`rl train` sets it to rl/rollout_stats) our agent loop appends one `RolloutStats`
per rollout, tagged with the step verl dispatched its prompt at, and `compute_score` one score record per scored
rollout, each to a file of its own process (workers on several nodes never share one); `rl train` joins them per step
into metrics.jsonl (webdancer_rl.metrics.add_verl_metrics). The join key is the question id and the scored text:
verl's reward manager hands `compute_score` the decoded last segment and the dataset's extra_info, not the rollout.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any, Optional

from webdancer.jsonl import JsonlAppender, iter_json_lines
from webdancer.records import record_from_dict
from webdancer.typed import to_dict

ROLLOUT_STATS_ENV = "WEBDANCER_ROLLOUT_STATS"
TRAIN = "train"  # extra_info.split of a training prompt (`rl prepare`); anything else is a validation rollout


@dataclass
class RolloutStats:
    """One rollout, all its segments."""

    turns: int
    well_formed_turns: int
    tool_calls: int
    tool_errors: int
    format_errors: int
    end: str
    model_tokens: int
    response_length: int  # tokens after each segment's prompt, summed: what the rollout wrote and was shown
    segments: int = 1
    step: Optional[int] = None  # verl's global step the prompt was dispatched at (verl's rollouts only)
    split: str = TRAIN
    question_id: str = ""
    key: str = ""  # score_key of the scored text, to join compute_score's record


def score_key(question_id: str, scored_text: str) -> str:
    return hashlib.sha256(f"{question_id}\x00{scored_text}".encode()).hexdigest()[:24]


def rollout_means(rollouts: list[RolloutStats]) -> dict[str, float]:
    """The per-step means both engines log (metrics.jsonl names)."""
    turns = sum(r.turns for r in rollouts)
    return {
        "valid_turn_rate": sum(r.well_formed_turns for r in rollouts) / turns if turns else 0.0,
        "answered_rate": fmean(r.end == "answer" for r in rollouts),
        "turns/mean": fmean(r.turns for r in rollouts),
        "tool_calls/mean": fmean(r.tool_calls for r in rollouts),
        "tool_errors/mean": fmean(r.tool_errors for r in rollouts),
        "format_errors/mean": fmean(r.format_errors for r in rollouts),
        "response_length/mean": fmean(r.response_length for r in rollouts),
        "segments/mean": fmean(r.segments for r in rollouts),
        "context_overflow_rate": fmean(r.end == "context_overflow" for r in rollouts),
        "policy_error_rate": fmean(r.end == "policy_error" for r in rollouts),
        "model_tokens/mean": fmean(r.model_tokens for r in rollouts),
    }


_appenders: dict[str, JsonlAppender] = {}


def process_log(env: str, prefix: str = "") -> Optional[JsonlAppender]:
    """This process's `<prefix><host>-<pid>.jsonl` in the folder $env names (None when it is unset): a file per worker
    process, so workers on several nodes never share one."""
    folder = os.environ.get(env)
    if not folder:
        return None
    path = os.path.join(folder, f"{prefix}{socket.gethostname()}-{os.getpid()}.jsonl")
    if path not in _appenders:
        _appenders[path] = JsonlAppender(path, key=None)
    return _appenders[path]


def append(kind: str, record: dict[str, Any]) -> None:
    """Append to this process's `<kind>-<host>-<pid>.jsonl` in $WEBDANCER_ROLLOUT_STATS (nothing when it is unset)."""
    log = process_log(ROLLOUT_STATS_ENV, f"{kind}-")
    if log is not None:
        log.write(record)


def record_rollout(stats: RolloutStats) -> None:
    append("rollouts", to_dict(stats))


def record_score(question_id: str, scored_text: str, scores: dict[str, float]) -> None:
    append("scores", {"key": score_key(question_id, scored_text), "scores": scores})


def scored_means(rollouts: list[RolloutStats], scores: list[dict[str, float]]) -> dict[str, float]:
    """rollout_means, and from compute_score's results: `reward/mean` (its score), `reward/<name>/mean`, `judge_failed/mean`."""
    out = rollout_means(rollouts)
    names = sorted({n for s in scores for n in s if all(n in t for t in scores)}) if scores else []
    for name in names:
        value = fmean(s[name] for s in scores)
        out["reward/mean" if name == "score" else "judge_failed/mean" if name == "judge_failed" else f"reward/{name}/mean"] = value
    return out


# What a held-out check reports (heldout/<name>), on both engines.
HELDOUT_KEYS = ("reward/", "answered_rate", "tool_calls/mean", "valid_turn_rate", "response_length/mean")


def heldout_metrics(measured: dict[str, float]) -> dict[str, float]:
    return {f"heldout/{k}": v for k, v in measured.items() if k.startswith(HELDOUT_KEYS)}


def step_metrics(folder: Path) -> dict[int, dict[str, float]]:
    """Per verl step: the training rollouts' means with their reward components (the scores joined to them; verl's own
    `reward/mean` is left to verl: it holds the overlong penalty), and, where validation rollouts ran at that step (verl's
    `trainer.test_freq`), `heldout/*`, which the `heldout_gap` alarm compares with the training reward."""
    scores: dict[str, dict[str, float]] = {}
    rollouts: dict[tuple[int, bool], list[RolloutStats]] = defaultdict(list)
    for path in sorted(folder.glob("scores-*.jsonl")):
        for _, obj in iter_json_lines(path):
            scores[obj["key"]] = obj["scores"]
    for path in sorted(folder.glob("rollouts-*.jsonl")):
        for _, obj in iter_json_lines(path):
            r = record_from_dict(RolloutStats, obj)
            if r.step is not None:
                rollouts[(r.step, r.split == TRAIN)].append(r)
    out: dict[int, dict[str, float]] = defaultdict(dict)
    for (step, train), group in sorted(rollouts.items()):
        measured = scored_means(group, [scores[r.key] for r in group if r.key in scores])
        if train:
            measured.pop("reward/mean", None)
            out[step].update(measured)
        elif "reward/mean" in measured:
            out[step].update(heldout_metrics(measured))
    return dict(out)
