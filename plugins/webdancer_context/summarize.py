"""`summarize`: when the prompt passes a share of the budget, a model writes a summary of the evidence so far and the
rollout goes on from the system prompt, the question and that summary (ReSum's rule, arXiv 2509.13313).

The summarizer is the rollout's own model by default (ReSum without a separate summarizer), or any endpoint set under
`context.summarize.model` (overrides of `model.*`: base_url, model, api_key_env, ...), with a prompt file of your own.
Each summary starts a `Segment` of the trajectory (its first step, where its turns begin, the summary): later prompts
are the system prompt, the question, the newest summary (which folds in the one before) and the segment's turns.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from webdancer.config import ModelConfig
from webdancer.context import ContextPolicy, ContextView
from webdancer.errors import ConfigError
from webdancer.records import Message, Segment
from webdancer.wire import THINK_CLOSE, unwrap_tool_response

SUMMARY_HEADING = "Summary of the research so far (the earlier turns were summarized to fit the context):"
PROMPT = """You are helping a web research agent that ran out of room for its notes. Summarize its research so far.

Question: {question}

Summary of the research before this part:
{summary}

This part of the research (the agent's turns and the tool results it got):
{evidence}

Write the new summary: every fact found that bears on the question, with the URL it came from; what was searched or
read without result; what is still unknown and worth trying next. Keep names, numbers and dates exact. Do not answer
the question unless the evidence settles it, and do not invent anything. Reply with the summary only."""


@dataclass
class SummarizeConfig:
    threshold: float = 0.75  # summarize once a prompt passes this share of agent.max_context_tokens
    max_tokens: int = 1024  # the summary's length
    prompt_file: Optional[str] = None  # your summarizer prompt; placeholders {question}, {summary}, {evidence}
    model: dict[str, Any] = field(default_factory=dict)  # the summarizer's endpoint, as overrides of model.*; empty: the rollout's model


def summary_message(summary: str) -> Message:
    return Message("user", f"{SUMMARY_HEADING}\n{summary}")


def evidence_text(turns: list[Message]) -> str:
    """The segment's turns as the summarizer reads them: the agent's turns and the tools' results, in order."""
    lines = []
    for message in turns:
        result = unwrap_tool_response(message.content) if message.role == "user" else None
        lines.append(f"[tool result]\n{result}" if result is not None else f"[{'agent' if message.role == 'assistant' else message.role}]\n{message.content}")
    return "\n\n".join(lines)


class Summarize(ContextPolicy):
    name = "summarize"
    Config = SummarizeConfig

    def __init__(self, config: Any = None):
        super().__init__(config)
        if not 0 < self.config.threshold <= 1:
            raise ConfigError(f"context.summarize.threshold={self.config.threshold}: a share of agent.max_context_tokens, in (0, 1]")
        self.prompt = PROMPT
        if self.config.prompt_file:
            path = Path(self.config.prompt_file)
            if not path.is_file():
                raise ConfigError(f"context.summarize.prompt_file={path}: no such file")
            self.prompt = path.read_text(encoding="utf-8")
            missing = [p for p in ("{question}", "{evidence}") if p not in self.prompt]
            if missing:
                raise ConfigError(f"context.summarize.prompt_file={path}: the prompt needs the placeholders {', '.join(missing)}")
        known = {f.name for f in dataclasses.fields(ModelConfig)}
        unknown = sorted(set(self.config.model) - known)
        if unknown:
            raise ConfigError(f"context.summarize.model: unknown model option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        self._clients: dict[str, Any] = {}

    def check_rollout_model(self, model: Optional[ModelConfig]) -> None:
        if model is None and not self.config.model.get("base_url"):
            raise ConfigError("agent.context=summarize: the rollout's model has no endpoint here (in RL the policy in training "
                              "generates), so the summarizer needs its own: set context.summarize.model.base_url (and .model), "
                              "as ReSum trains with a separate summarizer")

    async def fit(self, messages: list[Message], view: ContextView) -> Optional[list[Message]]:
        segment = view.segments[-1] if view.segments else None
        start = segment.start if segment else 2
        prompt = (segment.prompt if segment else messages[:2]) + messages[start:]
        size = view.size(prompt)
        if size <= self.config.threshold * view.max_tokens or start >= len(messages):
            return prompt if size <= view.max_tokens else None
        summary = await self._summarize(messages[1].content, segment.summary if segment else "", messages[start:], view)
        opening = messages[:2] + [summary_message(summary)]
        steps = sum(1 for m in messages if m.role == "assistant")
        view.segments.append(Segment(step=steps, start=len(messages), prompt=[Message(m.role, m.content) for m in opening],
                                     summary=summary, prompt_tokens=size))
        return opening if view.size(opening) <= view.max_tokens else None

    async def _summarize(self, question: str, previous: str, turns: list[Message], view: ContextView) -> str:
        from webdancer.llm import ChatClient

        model = dataclasses.replace(view.model or ModelConfig(), **self.config.model)
        key = repr(model)
        if key not in self._clients:  # one client per endpoint, shared by the rollouts
            self._clients[key] = ChatClient(model)
        text = self.prompt.replace("{question}", question).replace("{summary}", previous or "(none yet)").replace("{evidence}", evidence_text(turns))
        reply = await self._clients[key].chat([Message("user", text)], stop=[], max_tokens=self.config.max_tokens)
        summary = reply.text.split(THINK_CLOSE)[-1].strip()  # a reasoning model's thoughts are not the summary
        if not summary:
            raise ValueError(f"the summarizer ({model.model} at {model.base_url}) returned no summary")
        return summary

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
