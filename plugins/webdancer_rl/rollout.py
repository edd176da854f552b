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
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterator, Optional

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
    # The sampler's log-prob of each completion token (0.0 for observation tokens), when every turn's generator
    # reported them (vLLM does; TRL corrects for a sampler that differs from the policy with them); else None.
    logprobs: Optional[list[float]] = field(default_factory=list)

    @property
    def model_tokens(self) -> int:
        return sum(self.env_mask)


class Sampled(list):
    """A generated turn's token ids (a list, as every generator returns) with the sampler's log-prob of each token,
    from a generator that reports them."""

    def __init__(self, tokens: list[int], logprobs: list[float]):
        super().__init__(tokens)
        if len(logprobs) != len(tokens):
            raise ValueError(f"{len(logprobs)} log-probs for {len(tokens)} tokens")
        self.logprobs = list(logprobs)


# sequences (token ids), new-token budget of each -> the new tokens of each (ending in EOS when the model ended its turn;
# a `Sampled` when the generator reports log-probs); a coroutine, so a generator that serves requests concurrently
# (the batched engine) can run them side by side
Generate = Callable[[list[list[int]], list[int]], Awaitable[list[list[int]]]]


@dataclass
class RolloutTimes:
    """Wall time with at least one turn generating, with at least one tool running (the two overlap when rollouts run
    on their own), and the tokens generated."""

    generate_s: float = 0.0
    tools_s: float = 0.0
    generated_tokens: int = 0


class _Busy:
    """Wall time during which at least one of several overlapping activities runs."""

    def __init__(self) -> None:
        self.running, self.since, self.seconds = 0, 0.0, 0.0

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        if self.running == 0:
            self.since = time.perf_counter()
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            if self.running == 0:
                self.seconds += time.perf_counter() - self.since


class _Lockstep:
    """Collects the next turn of every live rollout, then generates them as one batch (in rollout order).

    For a generator that pads one batch and decodes it to its longest reply (`model.generate`): asking it for one
    turn at a time would run it at batch size one. The rollout whose request (or whose end) completes the batch
    runs the generation; the others wait for their share.
    """

    def __init__(self, generate: Generate, live: int):
        self.generate, self.live = generate, live
        self.waiting: list[tuple[int, list[int], int, asyncio.Future]] = []

    async def ask(self, index: int, ids: list[int], budget: int) -> list[int]:
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((index, ids, budget, future))
        await self._generate_if_all_asked()
        return await future

    async def leave(self) -> None:
        self.live -= 1
        await self._generate_if_all_asked()

    async def _generate_if_all_asked(self) -> None:
        if not self.waiting or len(self.waiting) < self.live:
            return
        batch, self.waiting = sorted(self.waiting, key=lambda w: w[0]), []
        try:
            outs = await self.generate([ids for _, ids, _, _ in batch], [budget for _, _, budget, _ in batch])
        except Exception as exc:  # every rollout of the batch fails with it
            for *_, future in batch:
                future.set_exception(exc)
            return
        for (*_, future), out in zip(batch, outs):
            future.set_result(out)


async def run_rollouts(
    prompts: list[list[int]], generate: Generate, toolbox: ToolBox, chat: ChatTokens, limits: RolloutLimits,
    times: Optional[RolloutTimes] = None, lockstep: bool = True,
) -> list[TokenRollout]:
    """Roll out every prompt, each in its own coroutine.

    `lockstep`: the rollouts take turns together, one batched generation per turn (what a generator that pads a
    batch needs, `model.generate`). Off, for a generator that runs concurrent requests each to its own end (the
    batched engine): a rollout asks for its next turn as soon as its tool returns, while others still decode, so
    the engine does not idle while the slowest tool call of a turn finishes, nor wait for the longest reply.
    """
    times = times if times is not None else RolloutTimes()
    params = {s["name"]: s["parameters"] for s in toolbox.schemas()}
    rollouts = [TokenRollout(list(p)) for p in prompts]
    generating, tooling = _Busy(), _Busy()

    async def timed(sequences: list[list[int]], budgets: list[int]) -> list[list[int]]:
        with generating():  # the model's time, not a rollout's wait for the others of its batch
            return await generate(sequences, budgets)

    together = _Lockstep(timed, len(rollouts)) if lockstep else None

    async def next_turn(index: int, ids: list[int], budget: int) -> list[int]:
        if together is not None:
            return await together.ask(index, ids, budget)
        return (await timed([ids], [budget]))[0]

    async def roll(index: int) -> None:
        r = rollouts[index]
        while (budget := turn_budget(limits, len(r.prompt_ids) + len(r.completion_ids))) > 0:
            out = await next_turn(index, r.prompt_ids + r.completion_ids, budget)
            times.generated_tokens += len(out)
            r.completion_ids += out
            r.env_mask += [1] * len(out)
            if isinstance(out, Sampled) and r.logprobs is not None:
                r.logprobs += out.logprobs
            else:
                r.logprobs = None
            r.turns += 1
            turn = read_turn(chat.decode(out), bool(out) and out[-1] in chat.eos_ids, params)
            r.well_formed_turns += turn.kind in ("answer", "call")
            if len(r.env_mask) >= limits.max_response_length:
                r.end = "length"
            elif r.turns >= limits.max_turns:
                r.end = "max_turns" if turn.continues else turn.kind
            elif not turn.continues:
                r.end = turn.kind
            if r.end:
                return
            with tooling():
                text, failed = await observation_text(turn, toolbox, limits)
            r.format_errors += turn.kind == "format_error"
            r.tool_calls += turn.kind == "call"
            r.tool_errors += failed
            obs = chat.observation(text)
            if len(r.env_mask) + len(obs) >= limits.max_response_length:
                r.end = "length"
                return
            r.completion_ids += obs
            r.env_mask += [0] * len(obs)
            if r.logprobs is not None:
                r.logprobs += [0.0] * len(obs)
        r.end = "length"

    async def one(index: int) -> None:
        await roll(index)
        if together is not None:
            await together.leave()

    tasks = [asyncio.ensure_future(one(i)) for i in range(len(rollouts))]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    times.generate_s += generating.seconds
    times.tools_s += tooling.seconds
    for r in rollouts:
        del r.completion_ids[limits.max_response_length :], r.env_mask[limits.max_response_length :]
        if r.logprobs is not None:
            del r.logprobs[limits.max_response_length :]
    return rollouts
