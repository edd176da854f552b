"""verl's custom reward function: `compute_score`, the RL side of the one reward path (`webdancer.rewards`).

verl calls `compute_score(data_source, solution_str, ground_truth, extra_info, **reward_kwargs)`
once per rollout (awaited, since this one is async: judge calls overlap across a batch).
The rewards and their weights come from `reward_kwargs` (written by `webdancer rl train` from
`rewards` and the `judge` section): `weights` (default: the paper's format 0.1 +
answer 0.9) and `options` per reward. They are scored by the same `RewardSet` as the filter and eval:
a judge that fails falls back to the match rule for that rollout, counted in `judge_failed`.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from webdancer.config import DEFAULT_REWARD_WEIGHTS
from webdancer.rewards import RewardInput, RewardSet, plain
from webdancer.wire import final_turn, parse_assistant
from webdancer_rl.rollout_stats import record_score


def reward_weights(weights: Optional[dict[str, float]]) -> dict[str, float]:
    """The weights to score with: the given ones, or the paper's when none are given."""
    return dict(weights or DEFAULT_REWARD_WEIGHTS)


_cache: dict[str, RewardSet] = {}


def reward_set(weights: dict[str, float], options: dict[str, dict[str, Any]]) -> RewardSet:
    """The reward plugins for these weights and options, built once per process."""
    key = json.dumps([weights, options], sort_keys=True, default=str)
    if key not in _cache:
        _cache[key] = RewardSet(weights, options)
    return _cache[key]


async def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: Optional[dict[str, Any]] = None,
    weights: Optional[dict[str, float]] = None,
    options: Optional[dict[str, dict[str, Any]]] = None,
    **_: Any,
) -> dict[str, float]:
    """{"score": weighted sum, <reward name>: its score, ..., "judge_failed": 0|1}. verl logs the keys for validation
    only; with WEBDANCER_ROLLOUT_STATS set they are recorded for `rl train`'s per-step metrics too."""
    rewards = reward_set(reward_weights(plain(weights)), plain(options) or {})
    extra_info = dict(extra_info or {})
    reference = ground_truth["target"] if isinstance(ground_truth, dict) else str(ground_truth)
    answer = parse_assistant(final_turn(solution_str), {}).answer
    sample = RewardInput(question=str(extra_info.get("question", "")), response=solution_str, reference=reference, answer=answer, extra=extra_info)
    scored = await rewards.score(sample)  # a judge outage raises: never a reward; training stops, a rerun resumes
    out = {**scored.parts, "score": scored.score, "judge_failed": float(bool(scored.judge_error))}
    record_score(str(extra_info.get("question_id", "")), solution_str, out)  # for `rl train`'s step metrics (verl logs none)
    return out


def overlong_penalty(response_length: int, max_length: int, buffer: int, factor: float) -> float:
    """DAPO's soft overlong punishment, as verl's DAPO reward manager adds it to the score (<= 0).

    Zero until the response is `buffer` tokens short of `max_length`, then falling linearly to -factor.
    """
    if buffer <= 0:
        return 0.0
    exceed = response_length - (max_length - buffer)
    return min(-exceed / buffer * factor, 0.0)
