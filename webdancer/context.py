"""Context policies: what of the conversation so far the agent's next prompt holds, within its token budget.

A hard question takes tens of tool calls and a ReAct context fills long before that. The policy named by
`agent.context` (options at `context.<name>`) decides, before every model turn, which messages the prompt keeps.
It may rewrite earlier observations in place (the trajectory then records what the model saw), or restart the
conversation from a summary (it appends a `Segment` to the trajectory's: later prompts start from it), and returns
the prompt, or None when nothing it can do fits the budget (the rollout ends as `context_overflow`). Whatever it
returns must keep the system prompt and the question as they are and fit the budget; a policy that breaks that,
or raises, ends the rollout as `policy_error` naming it: never a silent truncation. A model it calls being down is
an outage, as anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional

from webdancer.config import ModelConfig
from webdancer.errors import OutageError
from webdancer.records import Message, Segment
from webdancer.tools import NoOptions
from webdancer.wire import render_tool_response, unwrap_tool_response

TRUNCATED = "[earlier observation removed to fit the context budget]"


@dataclass
class ContextView:
    """What a policy is given beside the conversation: the prompt's budget in tokens and how the rollout's model counts
    them, the rollout's segments so far (the trajectory's list: a policy that restarts the conversation appends one),
    and the rollout model's endpoint (None for a policy without one, e.g. the expert)."""

    max_tokens: int
    count: Callable[[str], int]
    segments: list[Segment] = field(default_factory=list)
    model: Optional[ModelConfig] = None

    def size(self, messages: list[Message]) -> int:
        return sum(self.count(m.content) for m in messages)


class ContextPolicy:
    """Subclass, set `name` (and `Config` for options), implement `fit`; `aclose` frees what it opened."""

    name: ClassVar[str]
    Config: ClassVar[type] = NoOptions

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    async def fit(self, messages: list[Message], view: ContextView) -> Optional[list[Message]]:
        raise NotImplementedError

    def check_rollout_model(self, model: Optional[ModelConfig]) -> None:
        """Refuse, with a ConfigError before any rollout, a run whose rollout model (None: no endpoint, as in RL, where
        the policy in training generates) the policy cannot work with."""

    async def aclose(self) -> None:
        """Close the clients the policy opened (a summarizer's)."""


def _is_observation(message: Message) -> bool:
    return message.role == "user" and unwrap_tool_response(message.content) is not None


def _blank(messages: list[Message], indices: list[int], budget: ContextView, total: int, stop_within: bool) -> int:
    """Blank the observations at `indices` (oldest first), stopping once the prompt fits if `stop_within`."""
    blank = render_tool_response(TRUNCATED)
    for i in indices:
        if stop_within and total <= budget.max_tokens:
            break
        if messages[i].content != blank:
            total -= budget.count(messages[i].content) - budget.count(blank)
            messages[i].content = blank
    return total


class BlankOld(ContextPolicy):
    """The oldest observations are blanked until the prompt fits (the system prompt and the question never are)."""

    name = "blank_old"

    async def fit(self, messages: list[Message], budget: ContextView) -> Optional[list[Message]]:
        later = [i for i in range(2, len(messages)) if messages[i].role == "user"]
        total = _blank(messages, later, budget, budget.size(messages), stop_within=True)
        return messages if total <= budget.max_tokens else None


@dataclass
class KeepLastKConfig:
    k: int = 3  # tool results kept, the newest; every model turn is kept


class KeepLastK(ContextPolicy):
    """Every model turn, and only the last `k` tool results (MiroThinker's rule); older results are blanked. When
    even that does not fit, older of the kept results are blanked too, oldest first."""

    name = "keep_last_k"
    Config = KeepLastKConfig

    async def fit(self, messages: list[Message], budget: ContextView) -> Optional[list[Message]]:
        observations = [i for i in range(2, len(messages)) if _is_observation(messages[i])]
        old = observations[: max(0, len(observations) - self.config.k)]
        total = _blank(messages, old, budget, budget.size(messages), stop_within=False)
        total = _blank(messages, observations[len(old):], budget, total, stop_within=True)
        return messages if total <= budget.max_tokens else None


def check_prompt(policy: str, head: tuple[str, str], prompt: Any, budget: ContextView) -> Optional[str]:
    """Why a policy's prompt is refused (None: it is fine): it must be messages that keep the system prompt and the
    question (`head`: their texts when the rollout began) as they are, and fit the budget."""
    if not isinstance(prompt, list) or not all(isinstance(m, Message) for m in prompt):
        return f"context policy {policy!r} returned {type(prompt).__name__}, not a list of messages"
    system, question = head
    if not prompt or prompt[0].role != "system" or prompt[0].content != system:
        return f"context policy {policy!r} dropped or changed the system prompt"
    if len(prompt) < 2 or prompt[1].role != "user" or prompt[1].content != question:
        return f"context policy {policy!r} dropped or changed the question"
    size = budget.size(prompt)
    if size > budget.max_tokens:
        return f"context policy {policy!r} returned {size} tokens, over agent.max_context_tokens={budget.max_tokens}"
    return None


@dataclass
class Fitted:
    """The next prompt, or why the rollout ends before it: `context_overflow` (nothing fits), `policy_error` (the policy
    raised or broke its contract; `error` says how) or `outage` (a model the policy calls is down)."""

    prompt: Optional[list[Message]] = None
    end: str = ""
    error: Optional[str] = None


async def fit_prompt(policy: ContextPolicy, messages: list[Message], view: ContextView, head: tuple[str, str]) -> Fitted:
    """The one way every rollout (sampling, eval, the demo, both RL engines) asks its context policy for the next prompt."""
    try:
        prompt = await policy.fit(messages, view)
    except OutageError as exc:  # its summarizer is down: an outage, not the policy's fault
        return Fitted(end="outage", error=str(exc))
    except Exception as exc:  # a context policy's bug ends this rollout, named, never the run
        return Fitted(end="policy_error", error=f"context policy {policy.name!r} failed: {type(exc).__name__}: {exc}")
    if prompt is None:
        return Fitted(end="context_overflow")
    problem = check_prompt(policy.name, head, prompt, view)
    return Fitted(end="policy_error", error=problem) if problem is not None else Fitted(prompt)


def build_context_policy(cfg: Any) -> ContextPolicy:
    """The run's context policy: `agent.context`, with its options `context.<name>`."""
    from webdancer.plugins import get_plugins

    name = cfg.agent.context
    return get_plugins().build("context_policies", name, (cfg.context or {}).get(name), f"context.{name}")
