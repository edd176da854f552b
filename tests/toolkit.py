"""Small real tools registered in-process by the tests (the same hook third-party plugins use)."""

import asyncio
from dataclasses import dataclass

from webdancer import hookimpl
from webdancer.rewards import Reward
from webdancer.tools import Tool

LIST_OF_STRINGS = {"type": "array", "items": {"type": "string"}}


class EchoTool(Tool):
    name = "lookup"
    description = "Echo the queries back (a search stand-in for agent-loop tests)."
    parameters = {"type": "object", "properties": {"query": LIST_OF_STRINGS}, "required": ["query"]}

    async def call(self, arguments):
        return "results for: " + " | ".join(arguments["query"])


class SlowTool(Tool):
    name = "slow"
    description = "Sleeps for `seconds`."
    parameters = {"type": "object", "properties": {"seconds": {"type": "number"}}, "required": ["seconds"]}

    async def call(self, arguments):
        await asyncio.sleep(arguments["seconds"])
        return "woke up"


class BoomTool(Tool):
    name = "boom"
    description = "Always raises."
    parameters = {"type": "object", "properties": {}}

    async def call(self, arguments):
        raise RuntimeError("the tool broke")


@hookimpl
def register_tools(register):
    register(EchoTool)
    register(SlowTool)
    register(BoomTool)


class VowelShare(Reward):
    """The share of vowels among the response's letters: a graded reward any text earns, so a group of
    rollouts from an untrained model still has spread (GRPO then has something to learn from)."""

    name = "vowels"

    async def score(self, sample):
        letters = [c for c in sample.response.lower() if c.isalpha()]
        return sum(c in "aeiou" for c in letters) / len(letters) if letters else 0.0


@dataclass
class ShortAnswerConfig:
    max_words: int = 3


class ShortAnswer(Reward):
    """1.0 for an answer of at most `max_words` words: a reward with options, to follow one reward path."""

    name = "short"
    Config = ShortAnswerConfig

    async def score(self, sample):
        return float(bool(sample.answer) and len(sample.answer.split()) <= self.config.max_words)


@hookimpl
def register_rewards(register):
    register(VowelShare)
    register(ShortAnswer)
