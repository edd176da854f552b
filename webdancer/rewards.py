"""The reward interface, and the one way every stage scores with it.

The filter's correctness stage, `webdancer eval` and both RL engines (verl's `compute_score`, the
TRL engine) score a sample through a `RewardSet` built from the same config: `rewards` (by reward
plugin name, its `weight` and options) and the `judge` section. Any installed reward plugin works in
all of them.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Optional

from webdancer.errors import ConfigError, OutageError, WebdancerError
from webdancer.records import Trajectory
from webdancer.tools import NoOptions

if TYPE_CHECKING:
    from webdancer.config import WebdancerConfig

# A sample is correct (the filter keeps it, eval counts it) when its weighted score reaches this share of
# the weights' sum: with the paper's format 0.1 + answer 0.9, exactly when the answer is right.
CORRECT_AT = 0.5


@dataclass
class RewardInput:
    """What a reward sees: the model's whole response text, its final answer, and the reference."""

    question: str
    response: str
    reference: str
    answer: Optional[str] = None
    trajectory: Optional[Trajectory] = None
    extra: dict[str, Any] = field(default_factory=dict)


def reward_input(traj: Trajectory) -> RewardInput:
    """A finished trajectory as every stage scores it (the filter, eval, the environment adapters): its last message
    as the response, its answer, the reference, the trajectory itself."""
    return RewardInput(question=traj.question, response=traj.messages[-1].content, reference=traj.reference_answer or "",
                       answer=traj.answer or None, trajectory=traj)


class Reward:
    """Subclass, set `name` (and `Config`), implement `score` returning a float in [0, 1]."""

    name: ClassVar[str]
    Config: ClassVar[type] = NoOptions

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    async def score(self, sample: RewardInput) -> float:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What a report records about this reward: its options (override to add, e.g., a prompt's hash)."""
        return dataclasses.asdict(self.config) if dataclasses.is_dataclass(self.config) else {}

    async def aclose(self) -> None:
        """Close judge clients."""


@dataclass
class RewardScore:
    """One sample scored: each reward's value, their weighted sum, and whether that counts as correct."""

    parts: dict[str, float]
    score: float
    correct: bool
    judge_error: str = ""  # the judge refused or answered nonsense: its part is the `answer` reward's instead


def configured_weights(cfg: "WebdancerConfig") -> dict[str, float]:
    """The `weight` of each reward in `rewards` that has one, or when none has the paper's (with the judge scoring
    answers when `judge.model` is set)."""
    from webdancer.config import DEFAULT_REWARD_WEIGHTS, JUDGED_REWARD_WEIGHTS

    weights = {name: opts["weight"] for name, opts in (cfg.rewards or {}).items() if "weight" in (opts or {})}
    return weights or dict(JUDGED_REWARD_WEIGHTS if cfg.judge.model else DEFAULT_REWARD_WEIGHTS)


def configured_options(cfg: "WebdancerConfig") -> dict[str, dict[str, Any]]:
    """Each reward's options (`rewards.<name>` but its weight), with the judge's own from the `judge` section."""
    options = {name: {k: v for k, v in (opts or {}).items() if k != "weight"} for name, opts in (cfg.rewards or {}).items()}
    options = {name: opts for name, opts in options.items() if opts}
    if cfg.judge.model:
        options["judge"] = {"model": dict(cfg.judge.model), "prompt_file": cfg.judge.prompt_file}
    return options


def check_weights(weights: dict[str, float], options: dict[str, dict[str, Any]]) -> None:
    """Weights that can score: non-empty, none negative, not all zero, options only for rewards in use."""
    if not weights:
        raise ConfigError("rewards: no reward to score with; weigh at least one (e.g. rewards: {format: {weight: 0.1}, answer: {weight: 0.9}})")
    bad = {name: w for name, w in weights.items() if not isinstance(w, (int, float)) or w < 0}
    if bad:
        raise ConfigError(f"rewards: weights must be non-negative numbers, got {bad}")
    if not any(weights.values()):
        raise ConfigError(f"rewards: the weights are all zero ({weights}); give at least one a positive weight")
    for name in options:
        if name not in weights and name != "judge" and not (name == "answer" and "judge" in weights):  # answer: the judge's fallback
            raise ConfigError(f"rewards.{name} has options but no weight, so it scores nothing (weighted: {', '.join(weights)}); "
                              f"give it one (rewards.{name}.weight) or remove it")
    if "judge" in weights and not (options.get("judge") or {}).get("model"):
        raise ConfigError("rewards: 'judge' needs a judge model: set judge.model: {base_url, model, api_key_env}")


class RewardSet:
    """The configured reward plugins, built once: scores a sample into its parts and their weighted sum.

    A judge that refuses or answers nonsense is replaced, for that sample, by the `answer` reward (reported in
    `judge_error`); a judge that is down raises `OutageError`: an outage is never a score.
    """

    def __init__(self, weights: dict[str, float], options: Optional[dict[str, dict[str, Any]]] = None):
        from webdancer.plugins import get_plugins

        # verl hands reward_kwargs over as OmegaConf containers, nested ones included (the judge's model).
        self.options = {name: dict(opts or {}) for name, opts in (plain(options) or {}).items()}
        check_weights(plain(weights), self.options)
        self.weights = dict(plain(weights))
        def build(name: str) -> Reward:
            return get_plugins().build("rewards", name, self.options.get(name), "judge" if name == "judge" else f"rewards.{name}")

        self.rewards: dict[str, Reward] = {name: build(name) for name in self.weights}
        # A judge that refuses is replaced by the `answer` reward (rewards.answer's options), as if no judge were set.
        self.fallback: Optional[Reward] = (self.rewards.get("answer") or build("answer")) if "judge" in self.weights else None

    @classmethod
    def from_config(cls, cfg: "WebdancerConfig") -> "RewardSet":
        return cls(configured_weights(cfg), configured_options(cfg))

    async def score(self, sample: RewardInput) -> RewardScore:
        parts: dict[str, float] = {}
        judge_error = ""
        for name, reward in self.rewards.items():
            try:
                parts[name] = float(await reward.score(sample))
            except OutageError:
                raise
            except WebdancerError as exc:
                if name != "judge":
                    raise
                judge_error = str(exc)[:200] or type(exc).__name__
                parts[name] = float(await self.fallback.score(sample))
        score = sum(self.weights[name] * parts[name] for name in self.weights)
        return RewardScore(parts, score, score >= CORRECT_AT * sum(self.weights.values()), judge_error)

    @property
    def label(self) -> str:
        """A short name for what decided correctness, e.g. `format+answer` or `format+judge`."""
        return "+".join(self.weights)

    def describe(self) -> dict[str, Any]:
        """Every reward with its weight and options (the judge's model and its prompt's hash): for reports."""
        return {name: {"weight": self.weights[name], **reward.describe()} for name, reward in self.rewards.items()}

    async def aclose(self) -> None:
        for reward in {*self.rewards.values(), *([self.fallback] if self.fallback else [])}:
            await reward.aclose()


def plain(value: Any) -> Any:
    """Plain dicts and lists for OmegaConf containers (any depth); anything else as it is."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def prompt_hash(text: str) -> str:
    """The first 12 hex digits of a prompt's SHA-256: enough to tell two judge prompts apart in a report."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
