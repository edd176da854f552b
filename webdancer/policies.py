"""The rollout-policy interface: whatever writes the next assistant turn of a trajectory."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from webdancer.config import ModelConfig
from webdancer.records import Message, QAItem, Sampled, Usage
from webdancer.tools import NoOptions


@dataclass
class PolicyOutput:
    text: str
    usage: Usage = field(default_factory=Usage)
    latency_s: float = 0.0
    sampled: Optional[Sampled] = None  # the turn's token ids, when the server reports them


class Policy:
    """Subclass, set `name` (and `Config` for options), implement `act`.

    `act` gets the conversation so far and the task (which offline policies may use, e.g. an
    expert that knows the provenance); it returns the raw assistant text in the wire format.
    """

    name: ClassVar[str]
    Config: ClassVar[type] = NoOptions

    def __init__(self, config: Any = None, model: Optional[ModelConfig] = None):
        self.config = config if config is not None else self.Config()
        self.model = model or ModelConfig()

    @property
    def model_name(self) -> str:
        return self.model.model

    async def act(self, messages: list[Message], task: Optional[QAItem] = None) -> PolicyOutput:
        raise NotImplementedError

    def count_tokens(self, text: str) -> int:
        """Token estimate for the context budget; policies with a tokenizer should override it."""
        return len(text) // 4 + 1

    async def aclose(self) -> None:
        """Close clients and sessions."""


def build_policy(name: str, options: dict[str, Any], model: ModelConfig, plugins: Any = None) -> Policy:
    from webdancer.plugins import get_plugins

    return (plugins or get_plugins()).build("policies", name, options, f"policies.{name}", model)
