"""verl's custom reward function: `compute_score` dispatching to webdancer reward plugins.

verl calls `compute_score(data_source, solution_str, ground_truth, extra_info, **reward_kwargs)`
once per rollout (awaited, since this one is async: judge calls overlap across a batch).
The rewards and their weights come from `reward_kwargs` (written by `webdancer rl train`):
`weights` (default: the paper's format 0.1 + answer 0.9) and `options` per reward. A judge that
fails falls back to the no-judge match rule for that rollout, counted in `judge_failed`.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from webdancer.config import DEFAULT_REWARD_WEIGHTS
from webdancer.errors import ConfigError, OutageError, WebdancerError
from webdancer.rewards import Reward, RewardInput
from webdancer.scoring import matches
from webdancer.wire import final_turn, parse_assistant


def reward_weights(weights: Optional[dict[str, float]]) -> dict[str, float]:
    """The weights to score with: the given ones, or the paper's when none are given."""
    return dict(weights or DEFAULT_REWARD_WEIGHTS)

_cache: dict[str, dict[str, Reward]] = {}


def build_reward(name: str, options: dict[str, dict[str, Any]]) -> Reward:
    """The reward plugin `name` built with `reward_options.<name>` (checked; errors name that key)."""
    from webdancer.plugins import get_plugins

    return get_plugins().build("rewards", name, (options or {}).get(name), f"reward_options.{name}")


def build_rewards(weights: dict[str, float], options: dict[str, dict[str, Any]]) -> dict[str, Reward]:
    """Reward plugins by name, built once per process and set of options."""
    key = json.dumps([sorted(weights), options], sort_keys=True, default=str)
    if key not in _cache:
        _cache[key] = {name: build_reward(name, options) for name in weights}
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
    """{"score": weighted sum, <reward name>: its score, ...}: verl logs every key per step."""
    weights = reward_weights(weights)
    if not weights or any(w < 0 for w in weights.values()):
        raise ConfigError(f"reward weights must be non-negative and not all absent, got {weights}")
    extra_info = dict(extra_info or {})
    reference = ground_truth["target"] if isinstance(ground_truth, dict) else str(ground_truth)
    answer = parse_assistant(final_turn(solution_str), {}).answer
    sample = RewardInput(question=str(extra_info.get("question", "")), response=solution_str, reference=reference, answer=answer, extra=extra_info)
    out: dict[str, float] = {}
    judge_failed = 0.0
    for name, reward in build_rewards(weights, options or {}).items():
        try:
            out[name] = float(await reward.score(sample))
        except OutageError:
            raise  # a judge outage is never a reward: training stops, a rerun resumes from the last checkpoint
        except WebdancerError:
            if name != "judge":
                raise
            judge_failed = 1.0
            out[name] = float(bool(answer) and matches(answer, reference))
    out["score"] = sum(weights[name] * out[name] for name in weights)
    out["judge_failed"] = judge_failed
    return out


def overlong_penalty(response_length: int, max_length: int, buffer: int, factor: float) -> float:
    """DAPO's soft overlong punishment, as verl's DAPO reward manager adds it to the score (<= 0).

    Zero until the response is `buffer` tokens short of `max_length`, then falling linearly to -factor.
    """
    if buffer <= 0:
        return 0.0
    exceed = response_length - (max_length - buffer)
    return min(-exceed / buffer * factor, 0.0)
