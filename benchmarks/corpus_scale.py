"""A user corpus at scale (`tools.search.backend: corpus`): build and query an index of N documents (default 1M)
made from the offline web's paragraphs, and report build throughput, index size on disk, load time, RSS while
serving, query latency, and query throughput with 2 worker processes against 1, each against the issue's target.

    python benchmarks/corpus_scale.py [N]

Documents: paragraph pairs of the offline web's 12,545 pages (each document a different pair, ~60-120 words),
written as the JSONL a user would bring ({id, title, text, url}). Load and queries run in a fresh process so
the RSS is what a rollout worker holding the index pays.
"""

from __future__ import annotations

import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import Row, emit, scaling_rows

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))
WEB = ROOT / ".webdancer/web/pages.jsonl"


def paragraphs() -> list[tuple[str, str]]:
    out = []
    with WEB.open(encoding="utf-8") as fh:
        for line in fh:
            page = json.loads(line)
            for para in page["text"].split("\n\n"):
                words = para.split()
                if 25 <= len(words) <= 120:
                    out.append((page["title"], " ".join(words)))
    return out


def write_corpus(path: Path, n: int) -> list[str]:
    paras = paragraphs()
    p = len(paras)
    queries = []
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            (title, a), (_, b) = paras[i % p], paras[(i * 7919 + 13) % p]
            fh.write(json.dumps({"id": str(i), "title": f"{title} #{i}", "text": f"{a} {b}", "url": f"https://corpus.example/doc/{i}"}) + "\n")
            if i % max(1, n // 300) == 0:
                queries.append(" ".join(a.split()[3:9]))
    return queries


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: reset at exec, unlike getrusage's ru_maxrss, which a child inherits)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def serve_queries(corpus: str, index_dir: str, queries: list[str]) -> dict:
    """In a fresh process: load time, RSS after load and after the queries, latencies."""
    from webdancer_web.corpus import load_corpus

    start = time.perf_counter()
    corpus_obj = load_corpus(corpus, index_dir, "tools.search.corpus")
    load_s = time.perf_counter() - start
    rss_load = peak_rss_mb()
    latencies = []
    for q in queries:
        t = time.perf_counter()
        corpus_obj.search(q, 10)
        latencies.append((time.perf_counter() - t) * 1000)
    latencies.sort()
    return {"load_s": load_s, "rss_load_mb": rss_load, "rss_mb": peak_rss_mb(),
            "p50_ms": statistics.median(latencies), "p99_ms": latencies[int(0.99 * (len(latencies) - 1))]}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        corpus, index_dir, queries = sys.argv[2], sys.argv[3], json.loads(Path(sys.argv[4]).read_text())
        print("RESULT " + json.dumps(serve_queries(corpus, index_dir, queries)))
        return
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    if not WEB.is_file():
        sys.exit("run scripts/quickstart.sh (or `webdancer web build`) first: the documents are made from the offline web")
    from webdancer_web.corpus import index_folder, load_corpus

    tmp = Path(tempfile.mkdtemp(prefix="corpus-scale-"))
    try:
        corpus = tmp / "corpus.jsonl"
        queries = write_corpus(corpus, n)
        (tmp / "queries.json").write_text(json.dumps(queries))
        start = time.perf_counter()
        load_corpus(str(corpus), str(tmp / "index"), "bench")
        build_s = time.perf_counter() - start
        build_rss = peak_rss_mb()
        folder = index_folder(corpus, tmp / "index")
        size_mb = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6
        proc = subprocess.run([sys.executable, __file__, "--serve", str(corpus), str(tmp / "index"), str(tmp / "queries.json")],
                              capture_output=True, text=True, cwd=Path(__file__).parent)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if not lines:
            sys.exit(f"serving failed: {proc.stderr[-2000:]}")
        served = json.loads(lines[0][7:])
        corpus_mb = corpus.stat().st_size / 1e6
        from webdancer_web.config import SearchConfig
        from webdancer_web.corpus import CorpusSearch

        scaling = scaling_rows("corpus_scale", lambda w: CorpusSearch(SearchConfig(
            backend="corpus", corpus=str(corpus), corpus_index_dir=str(tmp / "index"), workers=w)), queries * 3)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    label = f"{n // 1000}k docs" if n < 1_000_000 else f"{n / 1e6:g}M docs"
    emit([
        Row("corpus_scale", f"index build, {label}", n / build_s, "docs/s", build_rss, "peak RSS MB while building", "report", True),
        Row("corpus_scale", "index size on disk", size_mb, "MB", size_mb / corpus_mb, "of the corpus file", "report", True),
        Row("corpus_scale", "load time (memory-mapped)", served["load_s"], "s", served["load_s"] / 5, "of the 5 s target", "< 5 s", served["load_s"] < 5),
        Row("corpus_scale", "RSS while serving", served["rss_mb"], "MB", served["rss_mb"] / 4096, "of the 4 GB target", "< 4 GB", served["rss_mb"] < 4096),
        Row("corpus_scale", f"query p50 ({len(queries)} queries)", served["p50_ms"], "ms", served["p50_ms"] / 20, "of the 20 ms target", "p50 < 20 ms", served["p50_ms"] < 20),
        Row("corpus_scale", "query p99", served["p99_ms"], "ms", served["p99_ms"] / served["p50_ms"], "p99 / p50", "report", True),
        *scaling,
    ])


if __name__ == "__main__":
    main()
