"""Typed records passed between stages: messages, tool calls, trajectories, QA items."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from webdancer.typed import from_dict, to_dict

Role = Literal["system", "user", "assistant"]
# "outage": the model endpoint or a tool backend was down after its retries. Not a result: such a
# trajectory is kept apart (see webdancer.sampling) and the rollout runs again on a rerun.
Termination = Literal["answered", "max_turns", "context_overflow", "model_error", "policy_error", "outage"]


@dataclass
class Message:
    """One chat message; tool responses travel as user turns, as in the reference release."""

    role: Role
    content: str


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass
class ToolResult:
    """What a tool returned for one call (`error` is True when the call failed or was refused)."""

    name: str
    content: str
    error: bool = False
    elapsed_s: float = 0.0


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, other: "Usage") -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens


@dataclass
class Sampled:
    """A model turn's tokens as the server reported them (`model.return_token_ids`): the prompt it rendered, the
    completion it sampled and, when reported, their log-probs."""

    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: Optional[list[float]] = None


@dataclass
class TurnTokens:
    """A `Sampled` turn as a trajectory keeps it: the prompt's ids after the first `reused` ids of the previous turn's
    prompt + completion (all of them on the first turn), so a conversation's ids are stored once. `reused` short of
    the previous sequence says the server rendered the earlier turns otherwise than they were sampled (`webdancer traj
    check` reports where)."""

    reused: int
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: Optional[list[float]] = None


@dataclass
class Step:
    """One model turn and the tool call it made (if any), with timings."""

    index: int
    raw_output: str
    thought: str = ""
    tool_call: Optional[ToolCall] = None
    tool_result: Optional[ToolResult] = None
    answer: Optional[str] = None
    parse_error: Optional[str] = None
    wrote_tool_response: bool = False
    model_latency_s: float = 0.0
    usage: Usage = field(default_factory=Usage)
    tokens: Optional[TurnTokens] = None  # when the server reports token ids (`model.return_token_ids`)


@dataclass
class Segment:
    """Where a context policy restarted the conversation (`summarize`): the segment's prompts are `prompt` (the
    system prompt, the question, the summary turn), then the messages from `start` on."""

    step: int  # the first step of the segment
    start: int  # the index in `messages` where the segment's own turns begin
    prompt: list[Message]
    summary: str
    prompt_tokens: int  # the prompt's size when it was summarized


@dataclass
class QAItem:
    """A question with its reference answer; reads the reference `sample_qa.jsonl` schema and adds provenance."""

    question: str
    answer: str
    id: str = ""
    tag: str = ""
    hops: int = 0
    source_urls: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.id:
            self.id = stable_id(self.question, self.answer)


@dataclass
class Trajectory:
    """One rollout of the agent on one question, with everything needed to filter, train and audit it."""

    id: str
    question: str
    messages: list[Message]
    steps: list[Step] = field(default_factory=list)
    answer: Optional[str] = None
    termination: Termination = "answered"
    error: Optional[str] = None
    question_id: str = ""
    sample_index: int = 0
    reference_answer: Optional[str] = None
    policy: str = ""
    model: str = ""
    tools: list[dict[str, Any]] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    elapsed_s: float = 0.0
    started_at: str = ""
    segments: list[Segment] = field(default_factory=list)  # where the context policy restarted from a summary


def stable_id(*parts: str) -> str:
    """A short id that is the same for the same content on every machine (resume keys depend on it)."""
    digest = hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest()
    return digest[:16]


def record_to_json(record: Any) -> str:
    return json.dumps(to_dict(record), ensure_ascii=False)


def record_from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build record `cls` from `data`; a bad field raises RecordError naming `where` and the field."""
    from webdancer.errors import RecordError
    from webdancer.typed import FieldError

    try:
        return from_dict(cls, data)
    except FieldError as exc:
        location = f"{where}: " if where else ""
        raise RecordError(f"{location}{cls.__name__} {exc}") from None
