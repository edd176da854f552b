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


async def served_agent_episode(base_url, model_name, web, question="Who invented Python?"):
    """One agent episode (greedy, 3 turns, the offline web's tools) against an OpenAI-compatible server of the tiny
    model, checked as every served backend must pass it: it ended by answering or running out of turns, and every
    turn it wrote was handled (an answer, a tool call, or an error observation)."""
    from webdancer.agent import Agent
    from webdancer.config import AgentConfig, ModelConfig
    from webdancer.config_loader import load_config
    from webdancer.policies import build_policy
    from webdancer.tools import ToolBox

    cfg = load_config(None, [f"web.root={web.root}", f"web.port={web.port}", "tools.visit.cache_dir=null"])
    policy = build_policy("openai", {}, ModelConfig(base_url=base_url, model=model_name, max_tokens=96, temperature=0.0, max_retries=1))
    toolbox = ToolBox.from_config(cfg.agent.tools, cfg.tools, 30)
    async with toolbox:
        traj = await Agent(policy, toolbox, AgentConfig(max_turns=3, current_date="2026-11-24")).run(question)
    await policy.aclose()
    assert traj.termination in ("answered", "max_turns"), traj.error
    assert 1 <= len(traj.steps) <= 3 and traj.usage.completion_tokens > 0
    for step in traj.steps:
        assert step.raw_output.strip()
        assert step.answer is not None or step.tool_call is not None or step.parse_error
    return traj
