"""Agent-loop throughput vs the physical limit, against a fake model with fixed latency.

Each trajectory makes 3 model calls (50 ms each) and 2 tool calls (20 ms each), so one
trajectory takes at least L = 0.19 s and c concurrent trajectories can finish at most c / L
per second. We print measured trajectories/s as a ratio to that limit at c = 1, 16, 64.
Target: >= 0.9 at 64 concurrent on 2 cores.
"""

from __future__ import annotations

import asyncio
import time

from _common import FakeModelProcess, Row, emit

MODEL_LATENCY, TOOL_LATENCY = 0.05, 0.02
MODEL_CALLS, TOOL_CALLS = 3, 2


def build_agent(base_url: str):
    from webdancer import hookimpl
    from webdancer.agent import Agent
    from webdancer.config import AgentConfig, ModelConfig
    from webdancer.plugins import Plugins
    from webdancer.policies import build_policy
    from webdancer.tools import Tool, ToolBox

    class FixedLatencySearch(Tool):
        name = "search"
        description = "search with a fixed latency"
        parameters = {"type": "object", "properties": {"query": {"type": "array", "items": {"type": "string"}}}, "required": ["query"]}

        async def call(self, arguments):
            await asyncio.sleep(TOOL_LATENCY)
            return "1. [result](http://127.0.0.1/x)\nsnippet"

    class Plugin:
        @staticmethod
        @hookimpl
        def register_tools(register):
            register(FixedLatencySearch)

    import webdancer_openai

    plugins = Plugins(load_entrypoints=False)  # only the policy under test and the fixed-latency tool
    plugins.register(webdancer_openai, name="openai")
    plugins.register(Plugin, name="bench")
    policy = build_policy("openai", {}, ModelConfig(base_url=base_url, model="fake", max_retries=0), plugins)
    toolbox = ToolBox.from_config(["search"], {}, 10.0, plugins)
    return Agent(policy, toolbox, AgentConfig(current_date="2026-01-01"))


async def measure(base_url: str, concurrency: int, waves: int) -> float:
    from webdancer.agent import run_many
    from webdancer.records import QAItem

    agent = build_agent(base_url)
    tasks = [(QAItem(question=f"question {i}", answer="done"), 0) for i in range(concurrency * waves)]
    await run_many(agent, tasks[:concurrency], concurrency)  # warm connections
    start = time.perf_counter()
    trajs = await run_many(agent, tasks, concurrency)
    elapsed = time.perf_counter() - start
    await agent.policy.aclose()
    assert all(t.termination == "answered" for t in trajs), {t.termination for t in trajs}
    return len(trajs) / elapsed


def main() -> None:
    per_traj = MODEL_CALLS * MODEL_LATENCY + TOOL_CALLS * TOOL_LATENCY
    rows = []
    with FakeModelProcess(MODEL_LATENCY) as base_url:
        for c, waves in ((1, 10), (16, 5), (64, 5)):
            rate = asyncio.run(measure(base_url, c, waves))
            limit = c / per_traj
            ratio = rate / limit
            target = ">= 0.9" if c == 64 else "report"
            rows.append(Row("agent_loop", f"trajectories/s @ concurrency {c}", rate, "traj/s", ratio, "of limit c/L", target, ratio >= 0.9 or c != 64))
    emit(rows)


if __name__ == "__main__":
    main()
