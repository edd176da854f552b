"""Token-exact rollouts, and the check that a chat template renders them back to the tokens that were sampled.

Multi-turn RL trains on the tokens a rollout sampled; anything that later re-renders the same conversation from
text (SFT on the trajectories, a trainer that re-tokenizes, an evaluation) gets those tokens back only if the
model's chat template renders every earlier turn as it was generated. Templates that drop earlier thoughts, add a
newline, or re-serialize a tool call break that silently. A `TokenRollout` record keeps what was trained: the
prompt, the prompt's and the completion's token ids, the loss mask (1: model-written and trained), the sampler's
log-probs and the policy step; `check` re-renders it and names every turn whose tokens differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from webdancer.context import TRUNCATED
from webdancer.records import Trajectory
from webdancer.wire import RESP_CLOSE, RESP_OPEN

# verl's workers append their rollouts to files in this folder (`rl train` sets it when rl.record_tokens is on).
TOKEN_ROLLOUTS_ENV = "WEBDANCER_TOKEN_ROLLOUTS"


@dataclass
class TokenRollout:
    """One RL rollout as it was trained (`token_rollouts.jsonl`, one line each)."""

    id: str
    step: Optional[int]  # the update that trained it (sampled by the policy of step - 1); from verl, the step its trainer
    # dispatched the prompt at (None where verl's trainer does not say)
    engine: str
    prompt: list[dict[str, Any]]  # the messages the prompt ids render
    prompt_ids: list[int]
    completion_ids: list[int]
    loss_mask: list[int]  # per completion token: 1 model-written and trained, 0 observation (or a dropped group)
    model_mask: list[int]  # per completion token: 1 model-written, 0 observation (what the turns are cut by)
    logprobs: Optional[list[float]] = None  # the sampler's, per completion token (0.0 on observations), when reported
    reward: Optional[float] = None
    end: str = ""
    question_id: str = ""
    # [where in completion_ids, length] of each segment's prompt after the first (the context policy restarted the
    # rollout there), and the messages each such prompt renders: each segment was scored in its own context
    restarts: list[list[int]] = field(default_factory=list)
    restart_prompts: list[list[dict[str, Any]]] = field(default_factory=list)


def segment_spans(prompt_ids: Any, completion_ids: Any, restarts: Any) -> list[tuple[Any, int, int]]:
    """Each segment of a rollout laid out as one row (`restarts`: [offset, length] of each later segment's prompt in
    the completion) as (its prompt ids, where its tokens start and end in the completion). Lists or tensors."""
    out, prompt, start = [], prompt_ids, 0
    for offset, length in restarts or []:
        out.append((prompt, start, offset))
        prompt, start = completion_ids[offset : offset + length], offset + length
    out.append((prompt, start, len(completion_ids)))
    return out


def segment_records(record: TokenRollout) -> list[TokenRollout]:
    """A rollout the context policy restarted, as one record per segment (each checked against its own prompt)."""
    if not record.restarts:
        return [record]
    spans = segment_spans(record.prompt_ids, record.completion_ids, record.restarts)
    prompts = [record.prompt, *record.restart_prompts]
    return [TokenRollout(
        id=record.id if index == 0 else f"{record.id}#{index}", step=record.step, engine=record.engine, prompt=prompts[index],
        prompt_ids=list(prompt_ids), completion_ids=record.completion_ids[start:end], loss_mask=record.loss_mask[start:end],
        model_mask=record.model_mask[start:end], logprobs=record.logprobs[start:end] if record.logprobs else None,
        reward=record.reward, end=record.end if index == len(spans) - 1 else "restart", question_id=record.question_id)
        for index, (prompt_ids, start, end) in enumerate(spans)]


@dataclass
class Drift:
    """A turn whose re-rendered tokens differ from the sampled ones."""

    rollout: str
    turn: int  # 0-based, counting model turns and observations in order (-1: the prompt)
    kind: str  # prompt | model | observation
    position: int  # the first differing token, counted from the start of the sequence
    sampled: str
    rendered: str
    # template: the re-rendered text differs; tokenization: the same text, other tokens; cut: a stop string cut the
    # turn's text short of the tokens sampled (what the model wrote past it is in no later prompt)
    cause: str = "template"

    def describe(self) -> str:
        where = "the prompt" if self.kind == "prompt" else f"turn {self.turn} ({self.kind})"
        if self.cause == "cut":
            return f"{self.rollout}: {where} was cut by a stop string at token {self.position}: sampled {self.sampled!r} past it"
        return (f"{self.rollout}: {where} differs at token {self.position} ({self.cause}): sampled {self.sampled!r}, "
                f"re-rendered {self.rendered!r}")


def segments(mask: list[int]) -> list[tuple[int, int, int]]:
    """(start, end, value) of each run of equal values in `mask`."""
    runs: list[tuple[int, int, int]] = []
    start = 0
    for i in range(1, len(mask) + 1):
        if i == len(mask) or mask[i] != mask[start]:
            runs.append((start, i, mask[start]))
            start = i
    return runs


def _observation_text(decoded: str) -> str:
    """The tool's text inside a decoded observation segment (its turn's closing, the tool turn, the next opening)."""
    start, end = decoded.find(RESP_OPEN), decoded.rfind(RESP_CLOSE)
    if start < 0 or end < start:
        return decoded
    inner = decoded[start + len(RESP_OPEN) : end]
    return inner[1:-1] if inner.startswith("\n") and inner.endswith("\n") and len(inner) >= 2 else inner


def conversation(record: TokenRollout, tokenizer: Any) -> list[dict[str, Any]]:
    """The rollout as chat messages, as a text pipeline would store it: each model turn's decoded text (without its
    end-of-turn token) as an assistant message, each observation's tool text as a tool message."""
    eos = tokenizer.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    messages = [dict(m) for m in record.prompt]
    for start, end, model in segments(record.model_mask):
        ids = record.completion_ids[start:end]
        if model:
            while ids and ids[-1] in eos_ids:
                ids = ids[:-1]
            messages.append({"role": "assistant", "content": tokenizer.decode(ids, skip_special_tokens=False)})
        else:
            messages.append({"role": "tool", "content": _observation_text(tokenizer.decode(ids, skip_special_tokens=False))})
    return messages


def _render(tokenizer: Any, messages: list[dict[str, Any]], add_generation_prompt: bool, continue_final: bool = False, **kwargs: Any) -> list[int]:
    out = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=add_generation_prompt, return_dict=False,
                                        continue_final_message=continue_final, **kwargs)
    return list(out["input_ids"] if isinstance(out, dict) else out)


def check(record: TokenRollout, tokenizer: Any, **template_kwargs: Any) -> Optional[Drift]:
    """The first turn of `record` whose tokens, re-rendered from the conversation's text by the tokenizer's chat
    template, differ from the sampled ones (none: the template gives back exactly what was trained). Past a drift the
    two sequences no longer align, so a rollout reports its first one.

    A drift's `cause` is `template` when the re-rendered text differs (the template adds, drops or rewrites text), or
    `tokenization` when the text is the same but tokenized otherwise: the model sampled a tokenization that encoding
    its text does not give back (common at temperature 1, and in a turn cut mid-word by a length limit)."""
    sampled = list(record.prompt_ids) + list(record.completion_ids)
    messages = conversation(record, tokenizer)
    bounds = _bounds(record)
    prompt = _render(tokenizer, messages[: len(record.prompt)], True, **template_kwargs)
    if prompt != list(record.prompt_ids):
        return _drift(record, bounds, list(record.prompt_ids), prompt, tokenizer)
    # How the sequence ends: on an observation, with the next turn's opening (a generation prompt); on a model turn that
    # ended with its end-of-turn token, closed as the template closes a turn (maybe a newline more than was sampled); on
    # a turn cut by a length limit, open (the template's rendering stops where the text stops).
    eos = tokenizer.eos_token_id
    ended = bool(record.completion_ids) and record.completion_ids[-1] in set(eos if isinstance(eos, list) else [eos])
    if record.model_mask and record.model_mask[-1] == 0:
        rendered = _render(tokenizer, messages, True, **template_kwargs)
    else:
        rendered = _render(tokenizer, messages, False, continue_final=bool(record.model_mask) and not ended, **template_kwargs)
    if rendered[: len(sampled)] == sampled and (len(rendered) == len(sampled) or ended):
        return None
    return _drift(record, bounds, sampled, rendered, tokenizer)


def _bounds(record: TokenRollout) -> list[tuple[int, str, int, int]]:
    """(turn, kind, start, end) of the prompt and each model turn and observation, over prompt + completion ids."""
    bounds = [(-1, "prompt", 0, len(record.prompt_ids))]
    offset = len(record.prompt_ids)
    for turn, (start, end, model) in enumerate(segments(record.model_mask)):
        bounds.append((turn, "model" if model else "observation", offset + start, offset + end))
    return bounds


def rollouts_of(traj: Trajectory, tokenizer: Any) -> list[TokenRollout | Drift]:
    """A sampled trajectory's turns (`Step.tokens`, from a server asked for `model.return_token_ids`) as token
    sequences, one per segment (a context policy that restarts the conversation from a summary starts a new one):
    the segment's first prompt, then each completion (model-written) and the ids the next prompt added (the
    observation). Empty when a turn has no token ids. A turn whose prompt does not extend the previous prompt +
    completion ends its segment's record as a drift: the server rendered the earlier turns otherwise than they were
    sampled (`template`, `tokenization`), or the context policy rewrote an earlier observation (`context`)."""
    if not traj.steps or any(step.tokens is None for step in traj.steps):
        return []
    openings = [(0, traj.messages[:2])] + [(s.step, s.prompt) for s in traj.segments if 0 < s.step < len(traj.steps)]
    bounds = [first for first, _ in openings] + [len(traj.steps)]
    return [_segment_rollout(traj, index, bounds[index], bounds[index + 1], prompt, tokenizer) for index, (_, prompt) in enumerate(openings)]


def _segment_rollout(traj: Trajectory, index: int, first: int, last: int, prompt: list[Any], tokenizer: Any) -> TokenRollout | Drift:
    steps = traj.steps[first:last]
    turns = [step.tokens for step in steps]
    before = _sequence(traj.steps[:first])  # the previous turn's prompt + completion: a restart's prompt shares its start
    record = TokenRollout(id=traj.id if index == 0 else f"{traj.id}#{index}", step=None, engine="sample",
                          prompt=[{"role": m.role, "content": m.content} for m in prompt],
                          prompt_ids=before[: turns[0].reused] + turns[0].prompt_ids, completion_ids=[], loss_mask=[], model_mask=[],
                          logprobs=[] if all(t.logprobs is not None for t in turns) else None, end=traj.termination,
                          question_id=traj.question_id)
    for offset, (step, turn) in enumerate(zip(steps, turns)):
        sequence = record.prompt_ids + record.completion_ids
        if offset and turn.reused < len(sequence):
            drift = _drift(record, _bounds(record), sequence, sequence[: turn.reused] + turn.prompt_ids, tokenizer)
            if drift.kind == "observation" and TRUNCATED.strip("[]")[:27] in drift.rendered:  # blank_old's, keep_last_k's mark
                drift.cause = "context"
            return drift
        text = tokenizer.decode(turn.completion_ids, skip_special_tokens=True)
        if len(text) > len(step.raw_output) and text.startswith(step.raw_output):  # a stop string cut the text short of its tokens
            return Drift(record.id, 2 * offset, "model", len(sequence) + (len(turn.prompt_ids) if offset else 0),
                         text[len(step.raw_output):][:40], "", "cut")
        for ids, model in ((turn.prompt_ids if offset else [], 0), (turn.completion_ids, 1)):
            record.completion_ids += ids
            record.model_mask += [model] * len(ids)
            if record.logprobs is not None:
                record.logprobs += (turn.logprobs or []) if model else [0.0] * len(ids)
    record.loss_mask = list(record.model_mask)
    return record


def _sequence(steps: list[Any]) -> list[int]:
    """The last of `steps`' prompt + completion ids, rebuilt from what the trajectory keeps."""
    sequence: list[int] = []
    for step in steps:
        sequence = sequence[: step.tokens.reused] + step.tokens.prompt_ids + step.tokens.completion_ids
    return sequence


def _drift(record: TokenRollout, bounds: list[tuple[int, str, int, int]], sampled: list[int], rendered: list[int], tokenizer: Any) -> Drift:
    position = next((i for i, (a, b) in enumerate(zip(rendered, sampled)) if a != b), min(len(rendered), len(sampled)))
    turn, kind = next(((t, k) for t, k, start, end in bounds if start <= position < end), (bounds[-1][0], bounds[-1][1]))
    sampled_text = tokenizer.decode(sampled, skip_special_tokens=False)
    rendered_text = tokenizer.decode(rendered, skip_special_tokens=False)
    same_text = rendered_text.startswith(sampled_text) and not rendered_text[len(sampled_text):].strip()

    def around(ids: list[int]) -> str:
        return tokenizer.decode(ids[position : position + 12], skip_special_tokens=False)

    return Drift(record.id, turn, kind, position, around(sampled), around(rendered), "tokenization" if same_text else "template")
