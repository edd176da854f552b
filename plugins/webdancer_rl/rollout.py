"""Multi-turn RL rollouts on token ids: the agent's turn rules, laid out in tokens as verl's agent loop lays them out.

Both RL engines follow these rules. TRL's rollout function runs `run_rollouts`; verl's
`webdancer_agent` loop calls `read_turn`, `observation_text` and `turn_budget` from inside verl.
A turn is parsed with the agent's `parse_assistant`: an answer ends the rollout, a valid call runs
the tool, a malformed turn is answered with the same `[format error]` observation the agent
sends. Two rules are RL's own: a turn cut by a length limit, or one that writes its own
`<tool_response>`, ends the rollout (the model is not shown an observation after a made-up one).
Tool observations are appended as the chat template renders a `tool` message after the model's
end-of-turn token, and carry no loss (mask 0).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional

from webdancer.records import ToolCall
from webdancer.tools import ToolBox
from webdancer.wire import format_error_observation, parse_assistant
from webdancer_rl.config import RlConfig

# A rollout ends for one of these reasons.
ENDS = ("answer", "max_turns", "length", "cut", "wrote_tool_response")


@dataclass(frozen=True)
class RolloutLimits:
    """The limits of one rollout, in tokens (and characters for tool observations, as verl counts them)."""

    max_turns: int
    max_prompt_length: int
    max_response_length: int
    max_turn_tokens: int = 0  # 0: a turn may use the whole remaining budget (verl's default)
    max_tool_response_length: int = 4096
    truncate_side: str = "middle"

    @classmethod
    def from_config(cls, rl: RlConfig) -> "RolloutLimits":
        return cls(rl.max_turns, rl.max_prompt_length, rl.max_response_length, rl.max_turn_tokens,
                   rl.max_tool_response_length, rl.tool_response_truncate_side)


def turn_budget(limits: RolloutLimits, sequence_length: int) -> int:
    """New tokens the next turn may generate after `sequence_length` tokens (prompt + response so far).

    verl's SGLang server gives a turn min(response_length, prompt_length + response_length - len(ids));
    `max_turn_tokens` caps that further.
    """
    budget = min(limits.max_response_length, limits.max_prompt_length + limits.max_response_length - sequence_length)
    if limits.max_turn_tokens > 0:
        budget = min(budget, limits.max_turn_tokens)
    return max(0, budget)


def truncate_observation(text: str, limit: int, side: str = "middle") -> str:
    """verl's ToolAgentLoop rule for a tool response longer than `limit` characters."""
    if not text or len(text) <= limit:
        return text
    if side == "left":
        return "(truncated)..." + text[-limit:]
    if side == "right":
        return text[:limit] + "...(truncated)"
    half = limit // 2
    return text[:half] + "...(truncated)..." + text[-half:]


@dataclass
class Turn:
    """How one generated turn continues the rollout: kind is `answer`, `call`, `format_error`, `cut` or `wrote_tool_response`."""

    kind: str
    text: str
    thought: str = ""
    call: Optional[ToolCall] = None
    error: Optional[str] = None

    @property
    def continues(self) -> bool:
        return self.kind in ("call", "format_error")


def read_turn(text: str, ended: bool, tools: dict[str, dict[str, Any]]) -> Turn:
    """Parse a generated turn (decoded without special tokens); `ended`: it stopped at an end-of-turn token."""
    if not ended:
        return Turn("cut", text)
    parsed = parse_assistant(text, tools)
    if parsed.answer is not None:
        return Turn("answer", text, parsed.thought)
    if parsed.wrote_tool_response:
        return Turn("wrote_tool_response", text, parsed.thought)
    if parsed.error is not None:
        return Turn("format_error", text, parsed.thought, error=parsed.error)
    return Turn("call", text, parsed.thought, call=parsed.tool_call)


async def observation_text(turn: Turn, toolbox: ToolBox, limits: RolloutLimits) -> tuple[str, bool]:
    """The observation for a turn that continues, and whether the tool failed."""
    if turn.kind == "format_error":
        return format_error_observation(turn.error or ""), False
    assert turn.call is not None
    result = await toolbox.run(turn.call)
    return truncate_observation(result.content, limits.max_tool_response_length, limits.truncate_side), result.error


_PROBE = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]


class ChatTokens:
    """Token ids as the model's chat template renders a conversation: the prompt, and each observation."""

    def __init__(self, tokenizer: Any, chat_template_kwargs: Optional[dict[str, Any]] = None):
        self.tokenizer = tokenizer
        self.kwargs = dict(chat_template_kwargs or {})
        eos = tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self._probe = self._render(_PROBE, add_generation_prompt=False)
        ends = [i for i, t in enumerate(self._probe) if t in self.eos_ids]
        if not ends:
            raise ValueError("the chat template does not end an assistant turn with the end-of-sequence token")
        self._cut = ends[-1] + 1  # what follows the model's own end-of-turn token belongs to the observation

    def _render(self, messages: list[dict[str, Any]], add_generation_prompt: bool) -> list[int]:
        # No `tools=`: our prompt carries the tool descriptions itself (webdancer/prompts/user.txt).
        out = self.tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt,
                                                 return_dict=False, **self.kwargs)
        return list(out["input_ids"] if isinstance(out, dict) else out)

    def prompt(self, messages: list[dict[str, Any]]) -> list[int]:
        return self._render(messages, add_generation_prompt=True)

    def observation(self, text: str) -> list[int]:
        """The tokens after a model turn that ended in EOS: the turn's closing, the tool turn, the next generation prompt."""
        full = self._render([*_PROBE, {"role": "tool", "content": text}], add_generation_prompt=True)
        if full[: self._cut] != self._probe[: self._cut]:
            raise ValueError("the chat template renders earlier turns differently once a tool turn follows")
        return full[self._cut :]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


@dataclass
class TokenRollout:
    """One rollout: the prompt, then model tokens (mask 1) and observation tokens (mask 0)."""

    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)
    turns: int = 0
    well_formed_turns: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    format_errors: int = 0
    end: str = ""

    @property
    def model_tokens(self) -> int:
        return sum(self.env_mask)


# sequences (token ids), new-token budget of each -> the new tokens of each (ending in EOS when the model ended its turn);
# a coroutine, so a generator that serves requests concurrently (the batched engine) can run them side by side
Generate = Callable[[list[list[int]], list[int]], Awaitable[list[list[int]]]]


@dataclass
class RolloutTimes:
    generate_s: float = 0.0
    tools_s: float = 0.0
    generated_tokens: int = 0


async def run_rollouts(
    prompts: list[list[int]], generate: Generate, toolbox: ToolBox, chat: ChatTokens, limits: RolloutLimits,
    times: Optional[RolloutTimes] = None,
) -> list[TokenRollout]:
    """Roll out every prompt in lock-step: one batched generation per turn, then all tool calls at once."""
    times = times if times is not None else RolloutTimes()
    params = {s["name"]: s["parameters"] for s in toolbox.schemas()}
    rollouts = [TokenRollout(list(p)) for p in prompts]
    active = list(range(len(rollouts)))
    while active:
        budgets = [turn_budget(limits, len(rollouts[i].prompt_ids) + len(rollouts[i].completion_ids)) for i in active]
        for i in [i for i, b in zip(active, budgets) if b <= 0]:
            rollouts[i].end = "length"
        active, budgets = [i for i, b in zip(active, budgets) if b > 0], [b for b in budgets if b > 0]
        if not active:
            break
        t0 = time.perf_counter()
        outs = await generate([rollouts[i].prompt_ids + rollouts[i].completion_ids for i in active], budgets)
        times.generate_s += time.perf_counter() - t0
        times.generated_tokens += sum(len(o) for o in outs)
        pending: list[tuple[int, Turn]] = []
        for i, out in zip(active, outs):
            r = rollouts[i]
            r.completion_ids += out
            r.env_mask += [1] * len(out)
            r.turns += 1
            turn = read_turn(chat.decode(out), bool(out) and out[-1] in chat.eos_ids, params)
            r.well_formed_turns += turn.kind in ("answer", "call")
            if len(r.env_mask) >= limits.max_response_length:
                r.end = "length"
            elif r.turns >= limits.max_turns:
                r.end = "max_turns" if turn.continues else turn.kind
            elif not turn.continues:
                r.end = turn.kind
            else:
                pending.append((i, turn))
        t0 = time.perf_counter()
        observed = await asyncio.gather(*(observation_text(turn, toolbox, limits) for _, turn in pending))
        times.tools_s += time.perf_counter() - t0
        active = []
        for (i, turn), (text, failed) in zip(pending, observed):
            r = rollouts[i]
            r.format_errors += turn.kind == "format_error"
            r.tool_calls += turn.kind == "call"
            r.tool_errors += failed
            obs = chat.observation(text)
            if len(r.env_mask) + len(obs) >= limits.max_response_length:
                r.end = "length"
                continue
            r.completion_ids += obs
            r.env_mask += [0] * len(obs)
            active.append(i)
    for r in rollouts:
        del r.completion_ids[limits.max_response_length :], r.env_mask[limits.max_response_length :]
    return rollouts
