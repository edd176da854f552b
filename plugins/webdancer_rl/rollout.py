"""Multi-turn RL rollouts on token ids: the agent's turn rules, laid out in tokens as verl's agent loop lays them out.

Both RL engines follow these rules. TRL's rollout function runs `run_rollouts`; verl's
`webdancer_agent` loop calls `read_turn`, `observation_text` and `turn_budget` from inside verl.
A turn is parsed with the agent's `parse_assistant`: an answer ends the rollout, a valid call runs
the tool, a malformed turn is answered with the same `[format error]` observation the agent
sends. Two rules are RL's own: a turn cut by a length limit, or one that writes its own
`<tool_response>`, ends the rollout (the model is not shown an observation after a made-up one).
Tool observations are appended as the chat template renders a `tool` message after the model's
end-of-turn token, and carry no loss (mask 0).

Before every turn the run's context policy (`agent.context`) fits the conversation into `agent.max_context_tokens`
through the agent's own path (`webdancer.context.fit_prompt`): sampling, eval and both engines keep the same context.
A prompt that changes what the token sequence already holds (an observation blanked, a summary replacing the turns)
cannot continue it, so the rollout restarts from that prompt as a new *segment*: its tokens follow the earlier ones
in the same row (the restart prompt masked 0), and `TokenRollout.restarts` says where each begins, so the trainer
scores every segment in its own context and all of them share the rollout's reward and advantage (ReSum-GRPO).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterator, Optional

from webdancer.context import ContextPolicy, ContextView, fit_prompt
from webdancer.errors import OutageError
from webdancer.records import Message, ToolCall
from webdancer.token_trajectories import segment_spans
from webdancer.tools import ToolBox
from webdancer.wire import format_error_observation, parse_assistant, render_tool_response, unwrap_tool_response
from webdancer_rl.config import RlConfig
from webdancer_rl.rollout_stats import RolloutStats

# A rollout ends for one of these reasons (the last two: the context policy's, as in sampling).
ENDS = ("answer", "max_turns", "length", "cut", "wrote_tool_response", "context_overflow", "policy_error")


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


def turn_end(turn: Turn, turns: int, response_length: int, limits: RolloutLimits) -> str:
    """How the rollout ends after this turn ("" if it goes on): the response budget spent, then the turn limit
    (rl.max_turns; 0: none), then a turn that does not continue (answer, cut, wrote_tool_response)."""
    if response_length >= limits.max_response_length:
        return "length"
    if limits.max_turns and turns >= limits.max_turns:
        return "max_turns" if turn.continues else turn.kind
    return "" if turn.continues else turn.kind


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

    @functools.lru_cache(maxsize=8192)
    def count(self, text: str) -> int:
        """Tokens of a message's text, as the context policy counts them (the agent's own count: no template tokens)."""
        return len(self.tokenizer.encode(text, add_special_tokens=False))


def chat_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Messages as the RL chat renders them: an observation is a `tool` turn holding the tool's text."""
    out = []
    for m in messages:
        inner = unwrap_tool_response(m.content) if m.role == "user" else None
        out.append({"role": "tool", "content": inner} if inner is not None else {"role": m.role, "content": m.content})
    return out


class RolloutContext:
    """One rollout's conversation as messages, fitted by the context policy before each turn. `next_prompt` says
    whether the token sequence goes on (None) or restarts from a new prompt (its chat messages), or raises `Ended`."""

    def __init__(self, policy: ContextPolicy, prompt: list[dict[str, Any]], max_tokens: int, count: Callable[[str], int]):
        self.policy = policy
        self.messages = [Message(m["role"], m["content"]) for m in prompt]
        if len(self.messages) < 2 or self.messages[0].role != "system" or self.messages[1].role != "user":
            raise ValueError(f"a rollout's prompt must be the system prompt and the question (as `webdancer rl prepare` writes it), got roles "
                             f"{[m.role for m in self.messages]}: the context policy (agent.context) keeps those two as they are")
        self.head = (self.messages[0].content, self.messages[1].content)
        self.view = ContextView(max_tokens, count)  # no model endpoint: the policy in training generates
        self._held = self._key(self.messages)  # what the current segment's tokens render

    @staticmethod
    def _key(messages: list[Message]) -> list[tuple[str, str]]:
        return [(m.role, m.content) for m in messages]

    def model_turn(self, text: str) -> None:
        self.messages.append(Message("assistant", text))
        self._held.append(("assistant", text))

    def observation(self, text: str) -> None:
        message = Message("user", render_tool_response(text))
        self.messages.append(message)
        self._held.append((message.role, message.content))

    async def next_prompt(self) -> Optional[list[dict[str, Any]]]:
        fitted = await fit_prompt(self.policy, self.messages, self.view, self.head)
        if fitted.end == "outage":
            raise OutageError(fitted.error or "the context policy's model is down")
        if fitted.prompt is None:
            raise Ended(fitted.end, fitted.error)
        now = self._key(fitted.prompt)
        if now == self._held:
            return None
        self._held = now
        return chat_messages(fitted.prompt)


class Ended(Exception):
    """The context policy ended the rollout (`end`: context_overflow or policy_error)."""

    def __init__(self, end: str, error: Optional[str]):
        super().__init__(error or end)
        self.end, self.error = end, error


@dataclass
class TokenRollout:
    """One rollout: the prompt, then model tokens (mask 1) and observation tokens (mask 0); a segment the context
    policy restarted follows in the same row, its prompt masked 0 (`restarts`: where each such prompt begins in the
    completion, and its length)."""

    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)
    restarts: list[tuple[int, int]] = field(default_factory=list)
    restart_prompts: list[list[dict[str, Any]]] = field(default_factory=list)  # the messages each restart renders
    prompt_messages: Optional[list[dict[str, Any]]] = None  # set when the policy replaced the first prompt itself
    error: Optional[str] = None  # why the context policy ended it (policy_error)
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

    def sequence(self) -> list[int]:
        """The current segment's tokens (its prompt and what followed): what the next turn continues."""
        return self.completion_ids[self.restarts[-1][0] :] if self.restarts else self.prompt_ids + self.completion_ids

    @property
    def sequence_length(self) -> int:
        """Tokens of the current segment: its prompt and what followed."""
        if self.restarts:
            return len(self.completion_ids) - self.restarts[-1][0]
        return len(self.prompt_ids) + len(self.completion_ids)

    @property
    def response_length(self) -> int:
        """Tokens after the current segment's prompt (what rl.max_response_length bounds)."""
        if self.restarts:
            return len(self.completion_ids) - sum(self.restarts[-1])
        return len(self.completion_ids)

    def restart(self, prompt_ids: list[int], messages: list[dict[str, Any]]) -> None:
        """Go on from a new prompt: a new segment, or the current one's prompt replaced if nothing followed it yet."""
        if self.response_length == 0:
            if self.restarts:
                start, _ = self.restarts.pop()
                self.restart_prompts.pop()
                del self.completion_ids[start:], self.env_mask[start:]
                if self.logprobs is not None:
                    del self.logprobs[start:]
            else:
                self.prompt_ids, self.prompt_messages = list(prompt_ids), messages
                return
        self.restarts.append((len(self.completion_ids), len(prompt_ids)))
        self.restart_prompts.append(messages)
        self.completion_ids += prompt_ids
        self.env_mask += [0] * len(prompt_ids)
        if self.logprobs is not None:
            self.logprobs += [0.0] * len(prompt_ids)

    def stats(self) -> RolloutStats:
        return RolloutStats(turns=self.turns, well_formed_turns=self.well_formed_turns, tool_calls=self.tool_calls,
                            tool_errors=self.tool_errors, format_errors=self.format_errors, end=self.end,
                            model_tokens=self.model_tokens, response_length=len(self.response_ids()), segments=len(self.restarts) + 1)

    def segments(self) -> list[tuple[list[int], int, int]]:
        """Each segment as (its prompt ids, where its tokens start and end in completion_ids)."""
        return segment_spans(self.prompt_ids, self.completion_ids, self.restarts)

    def response_ids(self) -> list[int]:
        """The tokens after each segment's prompt, segment after segment: what the rollout wrote and was shown."""
        return [t for _, start, end in self.segments() for t in self.completion_ids[start:end]]

    def last_response_ids(self) -> list[int]:
        """The last segment's tokens after its prompt: what the rollout is scored on, as verl's reward manager scores a
        multi-segment rollout (by its last sequence; with no restart, the whole response)."""
        _, start, end = self.segments()[-1]
        return self.completion_ids[start:end]


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
    times: Optional[RolloutTimes] = None, lockstep: bool = True, contexts: Optional[list[RolloutContext]] = None,
) -> list[TokenRollout]:
    """Roll out every prompt, each in its own coroutine; `contexts`: each rollout's context policy (none: the prompt
    grows until the length limits, as verl's plain tool loop).

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

    async def fit(r: TokenRollout, context: Optional[RolloutContext]) -> bool:
        """Apply the context policy before a turn; False when it ended the rollout."""
        if context is None:
            return True
        try:
            restart = await context.next_prompt()
        except Ended as ended:
            r.end, r.error = ended.end, ended.error
            return False
        if restart is not None:
            r.restart(chat.prompt(restart), restart)
        return True

    async def roll(index: int) -> None:
        r = rollouts[index]
        context = contexts[index] if contexts else None
        while await fit(r, context) and (budget := turn_budget(limits, r.sequence_length)) > 0:
            out = await next_turn(index, r.sequence(), budget)
            times.generated_tokens += len(out)
            r.completion_ids += out
            r.env_mask += [1] * len(out)
            if isinstance(out, Sampled) and r.logprobs is not None:
                r.logprobs += out.logprobs
            else:
                r.logprobs = None
            r.turns += 1
            text = chat.decode(out)
            turn = read_turn(text, bool(out) and out[-1] in chat.eos_ids, params)
            r.well_formed_turns += turn.kind in ("answer", "call")
            r.end = turn_end(turn, r.turns, r.response_length, limits)
            if r.end:
                return
            with tooling():
                observation, failed = await observation_text(turn, toolbox, limits)
            r.format_errors += turn.kind == "format_error"
            r.tool_calls += turn.kind == "call"
            r.tool_errors += failed
            obs = chat.observation(observation)
            if r.response_length + len(obs) >= limits.max_response_length:
                r.end = "length"
                return
            r.completion_ids += obs
            r.env_mask += [0] * len(obs)
            if r.logprobs is not None:
                r.logprobs += [0.0] * len(obs)
            if context is not None:
                context.model_turn(text)
                context.observation(observation)
        if not r.end:
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
        cut = len(r.completion_ids) - r.response_length + limits.max_response_length  # the current segment's limit
        del r.completion_ids[cut:], r.env_mask[cut:]
        if r.logprobs is not None:
            del r.logprobs[cut:]
    return rollouts
