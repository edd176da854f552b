"""The reward interface, shared by filtering, evaluation and RL (verl's compute_score)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from webdancer.records import Trajectory
from webdancer.tools import NoOptions


@dataclass
class RewardInput:
    """What a reward sees: the model's whole response text, its final answer, and the reference."""

    question: str
    response: str
    reference: str
    answer: Optional[str] = None
    trajectory: Optional[Trajectory] = None
    extra: dict[str, Any] = field(default_factory=dict)


class Reward:
    """Subclass, set `name` (and `Config`), implement `score` returning a float in [0, 1]."""

    name: ClassVar[str]
    Config: ClassVar[type] = NoOptions

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    async def score(self, sample: RewardInput) -> float:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Close judge clients."""
