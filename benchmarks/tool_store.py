"""Tool store benchmark: what recording costs a local `search` call, and how fast a recorded call is served.

The same queries go to the real local search over the offline web (.webdancer/web, built by the
quickstart) three ways in one process: directly (no store), through the record path (mode live:
the call plus an append to calls.jsonl) and as store hits (mode cached, after recording).
Each query goes through the direct and the record path back to back (the order alternating). Targets:
record-path overhead < 5 % of a local search call; hit p50 well under the call itself.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import Row, emit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

from webdancer.config_loader import load_config  # noqa: E402
from webdancer.records import ToolCall  # noqa: E402
from webdancer.tools import ToolBox  # noqa: E402

ROUNDS = 5
QUERIES = [f"{a} {b}" for a in ("python", "list", "string", "network", "memory", "compiler", "thread", "file", "unicode", "socket")
           for b in ("tutorial", "error", "function", "protocol", "definition", "module", "example", "language", "history", "format")]


async def timed_call(box: ToolBox, query: str) -> float:
    start = time.perf_counter()
    result = await box.run(ToolCall("search", {"query": [query]}))
    elapsed = time.perf_counter() - start
    assert not result.error, result.content
    return elapsed


async def paired_calls(first: ToolBox, second: ToolBox, queries: list[str]) -> tuple[list[float], list[float]]:
    """Each query through both boxes back to back, the order alternating, so drift on a shared machine hits both alike."""
    a, b = [], []
    for i, q in enumerate(queries):
        if i % 2:
            b.append(await timed_call(second, q))
            a.append(await timed_call(first, q))
        else:
            a.append(await timed_call(first, q))
            b.append(await timed_call(second, q))
    return a, b


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main_async() -> list[Row]:
    web_root = Path(".webdancer/web")
    if not (web_root / "manifest.json").is_file():
        sys.exit(f"{web_root} is not built: run the quickstart (or `webdancer web build`) first")
    overheads, direct_all, hits_all = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        direct_box = ToolBox.for_run(load_config(None, ["agent.tools=[search]"]))
        for q in QUERIES:  # warm the index and the page store's file cache
            await timed_call(direct_box, q)
        for r in range(ROUNDS):
            record_box = ToolBox.for_run(load_config(None, ["agent.tools=[search]", "tool_store.mode=live", f"tool_store.dir={tmp}/r{r}"]))
            direct, recorded = await paired_calls(direct_box, record_box, QUERIES)
            await record_box.aclose()
            overheads.append(statistics.fmean(recorded) / statistics.fmean(direct) - 1.0)
            direct_all += direct
            hit_box = ToolBox.for_run(load_config(None, ["agent.tools=[search]", "tool_store.mode=cached", f"tool_store.dir={tmp}/r{r}"]))
            hits_all += [await timed_call(hit_box, q) for q in QUERIES]
            assert hit_box.store.summary()["search"]["hits"] == len(QUERIES)
            await hit_box.aclose()
        await direct_box.aclose()
    overhead = statistics.median(overheads)
    direct_p50, hit_p50, hit_p99 = percentile(direct_all, 0.5), percentile(hits_all, 0.5), percentile(hits_all, 0.99)
    spread = f"{min(overheads):+.1%}..{max(overheads):+.1%}"
    return [
        Row("tool_store", f"record-path overhead ({ROUNDS} rounds: {spread})", 100 * overhead, "% of call", overhead,
            "extra time / local search call", "< 0.05", overhead < 0.05),
        Row("tool_store", "store hit p50", 1000 * hit_p50, "ms", hit_p50 / direct_p50, "of a live local search p50", "report", True),
        Row("tool_store", "store hit p99", 1000 * hit_p99, "ms", hit_p99 / direct_p50, "of a live local search p50", "report", True),
    ]


if __name__ == "__main__":
    os.chdir(Path(__file__).resolve().parents[1])  # the default config's paths (.webdancer/web) are relative to the repository
    emit(asyncio.run(main_async()))
