"""Agent-loop throughput vs the physical limit, against a fake model in its own process.

Each trajectory makes 3 model calls (mean latency L_m) and 2 tool calls (20 ms each), so one
trajectory takes at least L = 3 L_m + 0.04 s and c concurrent trajectories finish at most c / L
per second. The fake model's latency is L_m x U(0.5, 1.5) (seeded; same mean), so rollouts drift
apart as they do against a real server; the rate is counted in a window while all c slots are
busy (`steady_rate`). The target setting is realistic: 1,024 concurrent rollouts against a model
that takes 1 s a turn (~1,000 model calls/s). The 50 ms rows are reported, not targets: at 256
concurrent they ask for ~4,000 model calls/s, which no served model answers; with the CPU row
they say what one model call costs the agent loop, the bound at any latency.
Targets: >= 0.95 of the limit at 64 concurrent (50 ms) and at 1,024 concurrent (1 s).
"""

from __future__ import annotations

import asyncio
import os
import time

from _common import FakeModelProcess, Row, emit, steady_rate

TOOL_LATENCY = 0.02
MODEL_CALLS, TOOL_CALLS = 3, 2
JITTER = 0.5
# (concurrency, mean model latency, waves of `concurrency` trajectories)
SETTINGS = ((1, 0.05, 40), (64, 0.05, 12), (256, 0.05, 12), (1024, 1.0, 6))
TARGETS = {64: 0.95, 1024: 0.95}


def trajectory_s(model_latency: float) -> float:
    return MODEL_CALLS * model_latency + TOOL_CALLS * TOOL_LATENCY


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
    policy = build_policy("openai", {}, ModelConfig(base_url=base_url, model="fake", max_retries=0, timeout_s=60), plugins)
    toolbox = ToolBox.from_config(["search"], {}, 10.0, plugins)
    return Agent(policy, toolbox, AgentConfig(current_date="2026-01-01"))


async def measure(base_url: str, concurrency: int, waves: int, model_latency: float) -> tuple[float, float]:
    """(trajectories/s while all slots are busy, CPU seconds of this process per model call)."""
    from webdancer.agent import run_many
    from webdancer.records import QAItem

    agent = build_agent(base_url)
    tasks = [(QAItem(question=f"question {i}", answer="done"), 0) for i in range(concurrency * waves)]
    await run_many(agent, tasks[:concurrency], concurrency)  # warm connections
    finished: list[float] = []
    ends: list[str] = []

    def done(traj) -> None:
        finished.append(time.perf_counter())
        ends.append(traj.termination)

    cpu, started = os.times(), time.perf_counter()
    await run_many(agent, tasks, concurrency, on_done=done)
    cpu_s = sum(os.times()[:2]) - sum(cpu[:2])
    await agent.policy.aclose()
    assert set(ends) == {"answered"}, set(ends)
    return steady_rate(finished, concurrency, started, 2 * trajectory_s(model_latency)), cpu_s / (len(tasks) * MODEL_CALLS)


def main() -> None:
    from webdancer import aio

    rows = []
    for latency in sorted({s[1] for s in SETTINGS}):
        with FakeModelProcess(latency, jitter=JITTER) as base_url:
            for c, _, waves in (s for s in SETTINGS if s[1] == latency):
                rate, cpu_per_call = aio.run(measure(base_url, c, waves, latency))
                ratio = rate / (c / trajectory_s(latency))
                target = TARGETS.get(c)
                rows.append(Row("agent_loop", f"traj/s @ {c} concurrent, model {latency * 1000:.0f} ms", rate, "traj/s", ratio,
                                "of limit c/L", f">= {target}" if target else "report", target is None or ratio >= target))
                if c == 256:
                    rows.append(Row("agent_loop", f"CPU per model call @ {c} concurrent", cpu_per_call * 1e6, "us", cpu_per_call * rate * MODEL_CALLS,
                                    "of one core busy", "report", True))
    emit(rows)


if __name__ == "__main__":
    main()
