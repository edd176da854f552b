"""Sampler throughput vs the physical limit, and the filter's records/s and memory on a 100k-record file.

Sampler: the agent benchmark's setup (fake model in its own process, 20 ms tools, 3 calls + 2 tools
per trajectory, same concurrencies and latencies) through `webdancer.sampling.sample`, which also
writes every trajectory to JSONL; ratio = trajectories/s while all slots are busy / (c / L).
Targets >= 0.95 at 64 and 256, >= 0.9 at 1,024. Memory: RSS growth during the 1,024 run over the
1,024 rollouts in flight (the sampler keeps no finished trajectory).
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

from _common import FakeModelProcess, Row, emit, rss_bytes, steady_rate
from agent_throughput import JITTER, SETTINGS, TARGETS, build_agent, trajectory_s


async def sampler_rate(base_url: str, tmp: Path, concurrency: int, waves: int, model_latency: float) -> tuple[float, float]:
    """(trajectories/s while all slots are busy, RSS growth per rollout in flight)."""
    from webdancer.records import QAItem
    from webdancer.sampling import sample

    agent = build_agent(base_url)
    warm = [QAItem(question=f"warm {i}", answer="done") for i in range(concurrency)]
    await sample(agent, warm, 1, tmp / f"warm{concurrency}.jsonl", concurrency)
    items = [QAItem(question=f"question {i}", answer="done") for i in range(concurrency * waves)]
    finished: list[float] = []
    peak = before = rss_bytes()
    started = time.perf_counter()

    def update(stats) -> None:
        nonlocal peak
        if stats.done == len(finished):
            return  # the status line's 2-second tick, not a finished rollout
        finished.append(time.perf_counter())
        if len(finished) % 64 == 0:
            peak = max(peak, rss_bytes())

    stats = await sample(agent, items, 1, tmp / f"trajs{concurrency}.jsonl", concurrency, on_update=update)
    await agent.policy.aclose()
    assert stats.done == len(items)
    return steady_rate(finished, concurrency, started, 2 * trajectory_s(model_latency)), (peak - before) / concurrency


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
    from webdancer import aio
    from webdancer.config import DEFAULT_REWARD_WEIGHTS, FilterConfig
    from webdancer.filtering import filter_file
    from webdancer.rewards import RewardSet

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for latency in sorted({s[1] for s in SETTINGS}):
            with FakeModelProcess(latency, jitter=JITTER) as base_url:
                for c, _, waves in (s for s in SETTINGS if s[1] == latency and s[0] in TARGETS):
                    rate, per_rollout = aio.run(sampler_rate(base_url, tmp, c, waves, latency))
                    ratio, target = rate / (c / trajectory_s(latency)), TARGETS[c]
                    rows.append(Row("sampler", f"traj/s @ {c} concurrent, model {latency * 1000:.0f} ms", rate, "traj/s", ratio,
                                    "of limit c/L", f">= {target}", ratio >= target))
                    if c == max(TARGETS):
                        rows.append(Row("sampler", f"memory per rollout in flight @ {c}", per_rollout / 1024, "KiB",
                                        per_rollout * c / 2**30, "GiB for all in flight", "report", True))
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
