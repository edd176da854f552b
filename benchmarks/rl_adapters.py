"""RL adapters: compute_score throughput (rule rewards; LLM judge batched) and the verl tool adapter's overhead.

- rewards: calls/s of `compute_score` with format + answer, and with a judge behind a fake
  OpenAI server (50 ms per call) at 64 calls in flight; ratio = measured / (64 / 50 ms), the
  rate a perfectly overlapped batch would reach. Target >= 0.8.
- tool adapter: the same local `search` calls through verl's `BaseTool.execute` (our adapter)
  and through webdancer's ToolBox directly; ratio = direct time / adapter time. Target >= 0.95.
  Needs verl: run with .venvs/rl/bin/python (run_all.py does); otherwise that row is skipped.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

from _common import FakeModelProcess, Row, emit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

from webdancer.records import ToolCall  # noqa: E402
from webdancer.wire import render_assistant  # noqa: E402

ROLLOUT = (render_assistant("search", tool_call=ToolCall("search", {"query": ["kilby"]}))
           + "\nuser\n<tool_response>\nJack Kilby invented it in 1958.\n</tool_response>\nassistant\n"
           + render_assistant("The page says so.", answer="Jack Kilby"))


async def reward_rate(n: int, concurrency: int, **kwargs) -> float:
    from webdancer_rl.reward import compute_score

    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            out = await compute_score("webdancer/crawlqa", ROLLOUT, "Jack Kilby", {"question": f"q{i}"}, **kwargs)
            assert out["score"] > 0.9, out

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.perf_counter() - start)


def reward_rows() -> list[Row]:
    rule = asyncio.run(reward_rate(5000, 64))
    latency, concurrency = 0.05, 64
    with FakeModelProcess(latency, "judge_correct") as judge_url:  # its own process: no shared GIL
        options = {"judge": {"model": {"base_url": judge_url, "model": "judge", "max_retries": 0}}}
        judged = asyncio.run(reward_rate(1920, concurrency, weights={"format": 0.1, "judge": 0.9}, options=options))
    limit = concurrency / latency
    return [
        Row("rl_reward", "compute_score format+answer", rule, "calls/s", rule / 1000, "calls/s / 1000", ">= 1 (1k calls/s)", rule >= 1000),
        Row("rl_reward", "compute_score with judge (64 in flight)", judged, "calls/s", judged / limit, "of 64/50ms overlap limit", ">= 0.8", judged / limit >= 0.8),
    ]


def adapter_rows() -> list[Row]:
    if importlib.util.find_spec("verl") is None:
        print("verl is not importable here: run with .venvs/rl/bin/python for the tool-adapter row", file=sys.stderr)
        return []
    from webdancer_web.build import build_web
    from webdancer_web.config import SiteConfig, WebConfig
    from webdancer_web.server import LocalWebServer

    from webdancer.config_loader import load_config
    from webdancer.tools import ToolBox

    tmp = Path(tempfile.mkdtemp())
    web = WebConfig(root=str(tmp), port=18765, sites=[SiteConfig("python", "html_dir", "/usr/share/doc/python3-doc/html", max_pages=200)])
    build_web(web.sites, tmp, web.base_url)
    cfg = load_config(None, [f"web.root={tmp}", f"web.port={web.port}"])
    queries = [["string methods"], ["asyncio event loop"], ["dictionary view"], ["unicode"], ["exceptions"]] * 100

    async def direct(box: ToolBox) -> float:
        start = time.perf_counter()
        for q in queries:
            await box.run(ToolCall("search", {"query": q}))
        return time.perf_counter() - start

    async def adapter(tool) -> float:
        start = time.perf_counter()
        for q in queries:
            instance, _ = await tool.create()
            await tool.execute(instance, {"query": q})
            await tool.release(instance)
        return time.perf_counter() - start

    with LocalWebServer(tmp, web.host, web.port):
        from webdancer_rl.verl_tool import WebdancerTool

        box = ToolBox.from_config(["search"], cfg.tools, 60)
        tool = WebdancerTool({"type": "native", "tool": "search", "options": dict(cfg.tools["search"])})
        asyncio.run(direct(box))  # warm the index and caches for both
        times: dict[str, list[float]] = {"direct": [], "adapter": []}
        for _ in range(5):  # interleaved, so drift in the machine's speed hits both alike
            times["direct"].append(asyncio.run(direct(box)))
            times["adapter"].append(asyncio.run(adapter(tool)))
        t_direct, t_adapter = min(times["direct"]), min(times["adapter"])
    ratio = t_direct / t_adapter
    per_call = (t_adapter - t_direct) / len(queries) * 1e6
    return [Row("rl_tool_adapter", "search via verl BaseTool vs direct", per_call, "us/call", ratio, "direct time / adapter time", ">= 0.95", ratio >= 0.95)]


if __name__ == "__main__":
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # verl's BaseTool prints each schema it loads
        rows = reward_rows() + adapter_rows()
    emit(rows)
