"""Offline-web benchmarks: index build, search latency/QPS, page extraction — each vs a baseline.

Baselines run in the same process on the same pages: html2text for extraction, and a naive
pure-Python BM25 (score every document per query) for indexing and search.
Targets on 2 cores: build >= 2,000 pages/s, search p50 < 5 ms, extraction >= 50 pages/s, search QPS with
2 worker processes >= 1.7x one worker (`tools.search.workers`).
"""

from __future__ import annotations

import math
import random
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import Row, emit, scaling_rows

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

import re  # noqa: E402

from webdancer_web.build import build_web  # noqa: E402
from webdancer_web.config import (
    SearchConfig,
    WebConfig,  # noqa: E402
)
from webdancer_web.extract import extract  # noqa: E402
from webdancer_web.index import LocalIndex  # noqa: E402
from webdancer_web.search import LocalSearch  # noqa: E402
from webdancer_web.sites import html_dir_pages  # noqa: E402

_WORD = re.compile(r"\w+")


class NaiveBM25:
    """The textbook formula in plain Python: what a hand-written index would do."""

    def __init__(self, docs: list[str], k1: float = 1.5, b: float = 0.75):
        self.tfs = [Counter(w.lower() for w in _WORD.findall(d)) for d in docs]
        self.lens = [sum(tf.values()) for tf in self.tfs]
        self.avg = sum(self.lens) / len(self.lens)
        df = Counter(w for tf in self.tfs for w in tf)
        n = len(docs)
        self.idf = {w: math.log(1 + (n - c + 0.5) / (c + 0.5)) for w, c in df.items()}
        self.k1, self.b = k1, b

    def search(self, query: str, k: int = 10) -> list[int]:
        terms = [w.lower() for w in _WORD.findall(query)]
        scores = []
        for i, tf in enumerate(self.tfs):
            s = 0.0
            for t in terms:
                f = tf.get(t)
                if f:
                    s += self.idf[t] * f * (self.k1 + 1) / (f + self.k1 * (1 - self.b + self.b * self.lens[i] / self.avg))
            scores.append(s)
        return sorted(range(len(scores)), key=scores.__getitem__, reverse=True)[:k]


def latencies(fn, queries: list[str], workers: int) -> tuple[float, float, float]:
    def timed(q: str) -> float:
        t = time.perf_counter()
        fn(q)
        return time.perf_counter() - t

    start = time.perf_counter()
    if workers == 1:
        lat = [timed(q) for q in queries]
    else:
        with ThreadPoolExecutor(workers) as pool:
            lat = list(pool.map(timed, queries))
    wall = time.perf_counter() - start
    lat.sort()
    return lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.99) - 1] * 1000, len(queries) / wall


def main() -> None:
    import html2text

    web = WebConfig()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        stats = build_web(web.sites, Path(tmp), web.base_url)
        index = LocalIndex(Path(tmp))
        # Baseline build on a sample: html2text extraction + naive BM25 indexing.
        sample = list(html_dir_pages(Path(web.sites[0].source), 150))
        h2t = html2text.HTML2Text()
        h2t.body_width = 0
        t = time.perf_counter()
        base_docs = [h2t.handle(p.html) for p in sample]
        NaiveBM25(base_docs)
        base_build = len(sample) / (time.perf_counter() - t)
        t = time.perf_counter()
        for p in sample:
            extract(p.html, "http://x/" + p.path)
        ours_extract = len(sample) / (time.perf_counter() - t)
        rows.append(Row("web_build", "index build (all sites)", stats.pages_per_s, "pages/s", stats.pages_per_s / base_build,
                        "vs html2text+naive BM25", ">= 2000 pages/s", stats.pages_per_s >= 2000))
        t = time.perf_counter()
        for p in sample:
            h2t.handle(p.html)
        base_extract = len(sample) / (time.perf_counter() - t)
        rows.append(Row("visit_extract", "HTML -> text, Python docs pages", ours_extract, "pages/s", ours_extract / base_extract,
                        "vs html2text", ">= 50 pages/s", ours_extract >= 50))
        rng = random.Random(0)
        queries = []
        for title in rng.sample(index.titles, 400):
            words = title.replace("-", " ").split()
            queries.append(" ".join(rng.sample(words, min(3, len(words)))) + " definition")
        naive = NaiveBM25([f"{ti}\n{tx}" for ti, tx in zip(index.titles, index.texts)])
        nb_p50, _, _ = latencies(naive.search, queries[:20], 1)
        for workers in (1, 16):
            p50, p99, qps = latencies(lambda q: index.search(q, 10), queries, workers)
            rows.append(Row("search_local", f"p50 latency @ {workers} concurrent", p50, "ms", nb_p50 / p50,
                            "naive BM25 p50 / ours", "p50 < 5 ms" if workers == 1 else "report", p50 < 5 or workers != 1))
            rows.append(Row("search_local", f"p99 latency @ {workers} concurrent", p99, "ms", nb_p50 / p99, "naive BM25 p50 / ours", "report", True))
            rows.append(Row("search_local", f"QPS @ {workers} concurrent", qps, "q/s", qps * nb_p50 / 1000, "vs naive BM25 QPS", "report", True))
        rows += scaling_rows("search_local", lambda w: LocalSearch(SearchConfig(web_root=tmp, workers=w)), queries * 5)
    emit(rows)


if __name__ == "__main__":
    main()
