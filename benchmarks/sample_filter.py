"""Sampler throughput vs the physical limit, and the filter's records/s and memory on a 100k-record file.

Sampler: the agent benchmark's setup (fake model 50 ms/call in its own process, 20 ms tools,
3 calls + 2 tools per trajectory) through `webdancer.sampling.sample`, which also writes every
trajectory to JSONL; ratio = trajectories/s / (64 / 0.19 s). Target >= 0.9.
Filter: 100,000 generated trajectories; ratio = peak RSS growth / file size (flat memory means
far below 1).
"""

from __future__ import annotations

import asyncio
import json
import resource
import tempfile
import time
from pathlib import Path

from _common import FakeModelProcess, Row, emit
from agent_throughput import MODEL_CALLS, MODEL_LATENCY, TOOL_CALLS, TOOL_LATENCY, build_agent


def sampler_rate(base_url: str, tmp: Path, concurrency: int = 64, waves: int = 5) -> float:
    from webdancer.records import QAItem
    from webdancer.sampling import sample

    async def rate() -> float:
        agent = build_agent(base_url)
        warm = [QAItem(question=f"warm {i}", answer="done") for i in range(concurrency)]
        await sample(agent, warm, 1, tmp / "warm.jsonl", concurrency)
        items = [QAItem(question=f"question {i}", answer="done") for i in range(concurrency * waves)]
        start = time.perf_counter()
        stats = await sample(agent, items, 1, tmp / "trajs.jsonl", concurrency)
        elapsed = time.perf_counter() - start
        await agent.policy.aclose()
        assert stats.done == len(items)
        return stats.done / elapsed

    return asyncio.run(rate())


def write_big_file(path: Path, n: int) -> None:
    from webdancer.records import Message, Step, ToolCall, ToolResult, Trajectory
    from webdancer.typed import to_dict

    tools = [{"name": "search", "description": "", "parameters": {"type": "object", "properties": {"query": {"type": "array", "items": {"type": "string"}}}, "required": ["query"]}}]
    with path.open("w") as fh:
        for i in range(n):
            steps = [Step(0, "raw", "look", ToolCall("search", {"query": [f"q{i}"]}), ToolResult("search", f"answer{i % 7} is here " * 20)),
                     Step(1, "raw", "done", answer=f"answer{i % 7}")]
            t = Trajectory(id=f"q{i % 25000}:{i // 25000}", question=f"question {i}", messages=[Message("system", "s" * 200), Message("user", "u" * 400)],
                           steps=steps, answer=f"answer{i % 7}", question_id=f"q{i % 25000}", reference_answer=f"answer{i % 5}", tools=tools)
            fh.write(json.dumps(to_dict(t)) + "\n")


def main() -> None:
    from webdancer.config import DEFAULT_REWARD_WEIGHTS, FilterConfig
    from webdancer.filtering import filter_file
    from webdancer.rewards import RewardSet

    rows = []
    limit = 64 / (MODEL_CALLS * MODEL_LATENCY + TOOL_CALLS * TOOL_LATENCY)
    with tempfile.TemporaryDirectory() as tmp, FakeModelProcess(MODEL_LATENCY) as base_url:
        tmp = Path(tmp)
        rate = sampler_rate(base_url, tmp)
        rows.append(Row("sampler", "trajectories/s @ concurrency 64", rate, "traj/s", rate / limit, "of limit c/L", ">= 0.9", rate / limit >= 0.9))
        big = tmp / "big.jsonl"
        write_big_file(big, 100_000)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        start = time.perf_counter()
        report = asyncio.run(filter_file(big, tmp / "kept.jsonl", FilterConfig(), RewardSet(DEFAULT_REWARD_WEIGHTS)))
        elapsed = time.perf_counter() - start
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
        size = big.stat().st_size
        rows.append(Row("filter", f"records/s over 100k ({size / 2**20:.0f} MiB)", report.total / elapsed, "rec/s",
                        grown / size, "peak RSS growth / file size", "flat (<< 1)", grown / size < 0.25))
    emit(rows)


if __name__ == "__main__":
    main()
