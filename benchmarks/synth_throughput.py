"""Synthesizer throughput on the offline web: CrawlQA (crawl + structural questions) and E2HQA (2 rounds).

Ratio: items/s end to end vs items/s of the question writing alone (what the crawl costs), and
for E2HQA the share of seeds that yielded a round-2 rewrite. Needs a built web (`webdancer web build`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import tempfile
import time
from pathlib import Path

from _common import Row, emit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
WEB = ROOT / ".webdancer/web"


def _busy(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def main() -> None:
    from webdancer_synth.crawlqa import CrawlQA, CrawlQAConfig
    from webdancer_synth.e2hqa import E2HQA, E2HQAConfig
    from webdancer_web.server import LocalWebServer

    from webdancer.jsonl import read_records
    from webdancer.records import QAItem
    from webdancer.synth import run_synthesizer

    if not (WEB / "manifest.json").is_file():
        sys.exit("build the web first: webdancer web build")
    base = json.loads((WEB / "manifest.json").read_text())["base_url"]
    port = int(base.rsplit(":", 1)[1])
    rows = []
    with tempfile.TemporaryDirectory() as tmp, (contextlib.nullcontext() if _busy(port) else LocalWebServer(WEB, "127.0.0.1", port)):
        tmp = Path(tmp)
        cfg = CrawlQAConfig(root_url=f"{base}/foldoc/python.html", crawl_store=str(tmp / "crawl.jsonl"), max_pages=600, num_items=200)
        start = time.perf_counter()
        asyncio.run(run_synthesizer(CrawlQA(cfg), tmp / "qa.jsonl"))
        total = time.perf_counter() - start
        start = time.perf_counter()  # again: the crawl store is complete, so this is question writing alone
        asyncio.run(run_synthesizer(CrawlQA(cfg), tmp / "qa2.jsonl"))
        writing = time.perf_counter() - start
        n = len(list(read_records(tmp / "qa.jsonl", QAItem)))
        rows.append(Row("synth_crawlqa", "items/s incl. crawling 600 pages", n / total, "items/s", writing / total, "share of time writing questions", "report", n >= 200))
        start = time.perf_counter()
        asyncio.run(run_synthesizer(E2HQA(E2HQAConfig(seed_file=str(tmp / "qa.jsonl"), rounds=2, search={"web_root": str(WEB)})), tmp / "hard.jsonl"))
        elapsed = time.perf_counter() - start
        hard = list(read_records(tmp / "hard.jsonl", QAItem))
        round2 = sum(1 for i in hard if i.provenance["round"] == 2)
        rows.append(Row("synth_e2hqa", "rewrites/s (2 rounds, 200 seeds)", len(hard) / elapsed, "items/s", round2 / n, "seeds reaching round 2", "report", True))
    emit(rows)


if __name__ == "__main__":
    main()
