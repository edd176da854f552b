"""Rollout policy `openai`: a teacher or student model behind any OpenAI-compatible endpoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from webdancer import hookimpl
from webdancer.config import ModelConfig
from webdancer.llm import ChatClient
from webdancer.policies import Policy, PolicyOutput
from webdancer.records import Message, QAItem
from webdancer.wire import THINK_CLOSE, THINK_OPEN


@dataclass
class OpenAIPolicyConfig:
    # short: an instruct model, its text before the call is the thought.
    # long: a reasoning model, its `reasoning_content` (or <think>) becomes the thought.
    cot: Literal["short", "long"] = "short"


class OpenAIPolicy(Policy):
    name = "openai"
    Config = OpenAIPolicyConfig

    def __init__(self, config: Optional[OpenAIPolicyConfig] = None, model: Optional[ModelConfig] = None):
        super().__init__(config, model)
        self.client = ChatClient(self.model)

    async def act(self, messages: list[Message], task: Optional[QAItem] = None) -> PolicyOutput:
        result = await self.client.chat(messages)
        text = result.text
        if self.config.cot == "long" and result.reasoning and THINK_OPEN not in text:
            text = f"{THINK_OPEN}\n{result.reasoning.strip()}\n{THINK_CLOSE}\n{text.lstrip()}"
        return PolicyOutput(text=text, usage=result.usage, latency_s=result.latency_s, sampled=result.sampled)

    async def aclose(self) -> None:
        await self.client.aclose()


@hookimpl
def register_policies(register):
    register(OpenAIPolicy)
