"""Shared helpers for benchmark scripts: a result table row, servers in child processes, the quickstart's outputs."""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART_CONFIG = ROOT / "configs/quickstart.yaml"
OFFLINE = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


BASE_MODEL = ROOT / ".webdancer/models/smollm2-135m"  # what the quickstart's `model` stage exports
QUICKSTART_RUN = ROOT / "runs/quickstart"
WEB_ROOT = ROOT / ".webdancer/web"  # the quickstart's built offline web


def need_quickstart(*paths: Path) -> None:
    """Exit with what to run when a quickstart output a benchmark reads is missing."""
    missing = [str(p.relative_to(ROOT)) for p in paths if not p.exists()]
    if missing:
        sys.exit(f"run scripts/quickstart.sh first: this benchmark reads what it leaves ({', '.join(missing)} missing)")


def tuned_or_base_model() -> Path:
    """The quickstart's SFT checkpoint when it has one, else the exported base model."""
    need_quickstart(BASE_MODEL / "config.json")
    sft = QUICKSTART_RUN / "sft"
    return sft if (sft / "config.json").is_file() else BASE_MODEL


def rl_model_and_questions() -> tuple[Path, Path]:
    """What the RL benchmarks train: the quickstart's SFT checkpoint (else the base model) and its training questions."""
    questions = QUICKSTART_RUN / "qa_train.jsonl"
    need_quickstart(BASE_MODEL / "config.json", questions)
    return tuned_or_base_model(), questions


@contextlib.contextmanager
def offline_web() -> Iterator[None]:
    """`webdancer web serve` on the quickstart's config in a child process, up (its root page answers) until the block ends."""
    import httpx

    from webdancer.config_loader import load_config

    base_url = load_config(QUICKSTART_CONFIG).web.base_url
    web = subprocess.Popen([str(Path(sys.executable).parent / "webdancer"), "web", "serve", "-c", str(QUICKSTART_CONFIG)], cwd=ROOT,
                           env=OFFLINE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base_url}/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if web.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the offline web did not come up at {base_url}")
            time.sleep(0.2)
        yield
    finally:
        web.terminate()


@dataclass
class Row:
    benchmark: str
    metric: str
    value: float
    unit: str
    ratio: float
    ratio_meaning: str
    target: str
    ok: bool


RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, object]:
    """Where a result was measured: CPU model, cores, the instruction sets that change our kernels, Python."""
    import platform

    cpu, flags = platform.processor(), set()
    info = Path("/proc/cpuinfo")
    if info.is_file():
        lines = info.read_text().splitlines()
        cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), cpu)
        flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
    return {"cpu": cpu, "cores": os.cpu_count(), "avx512_bf16": "avx512_bf16" in flags, "avx2": "avx2" in flags,
            "python": platform.python_version()}


def save_results(rows: list[Row], script: str) -> Path:
    """One run's rows as `benchmarks/results/<UTC time>-<script>.json` (with the machine): the tables in
    benchmarks/README.md are generated from these files, never typed."""
    import datetime as dt

    now = dt.datetime.now(dt.timezone.utc)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{now:%Y-%m-%dT%H%M%S}-{script}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"script": script, "measured": now.isoformat(timespec="seconds"), "machine": machine(),
                               "rows": [asdict(r) for r in rows]}, indent=1) + "\n")
    tmp.replace(path)
    return path


def emit(rows: list[Row]) -> None:
    """Print a table; for run_all.py, one JSON line per row prefixed with BENCH; with WEBDANCER_BENCH_SAVE=1, also a
    results file (`save_results`)."""
    for r in rows:
        flag = "ok" if r.ok else "MISS"
        print(f"{r.benchmark:<28} {r.metric:<34} {r.value:>10.3f} {r.unit:<10} ratio {r.ratio:>7.3f} ({r.ratio_meaning}; target {r.target}) {flag}")
    if os.environ.get("WEBDANCER_BENCH_JSON"):
        for r in rows:
            print("BENCH " + json.dumps(asdict(r)))
    if os.environ.get("WEBDANCER_BENCH_SAVE") and rows:
        print(f"saved {save_results(rows, Path(sys.argv[0]).stem).relative_to(ROOT)}")


def _serve_fake_openai(port_q: mp.Queue, latency_s: float, script: str, jitter: float) -> None:
    from collections import deque

    from webdancer import aio
    from webdancer.testing.fake_openai import FakeOpenAIState, serve_asyncio

    scripts = {"search_twice_then_answer": _search_twice_then_answer, "judge_correct": lambda request: "Correct"}
    state = FakeOpenAIState(replies=deque(), default=scripts[script], latency_s=latency_s, keep_requests=False, latency_jitter=jitter)
    aio.run(serve_asyncio(state, on_ready=port_q.put))


def _search_twice_then_answer(request: dict) -> str:
    n_obs = sum(1 for m in request["messages"] if m["content"].startswith("<tool_response>"))
    if n_obs < 2:
        call = {"name": "search", "arguments": {"query": [f"query {n_obs}"]}}
        return f"<think>look it up</think>\n<tool_call>\n{json.dumps(call)}\n</tool_call>"
    return "<think>found it</think>\n<answer>done</answer>"


class FakeModelProcess:
    """The fake OpenAI server in its own process, so the agent under test does not share its GIL.

    `jitter`: each reply takes latency_s x U(1 - jitter, 1 + jitter), same mean (see FakeOpenAIState)."""

    def __init__(self, latency_s: float, script: str = "search_twice_then_answer", jitter: float = 0.0):
        ctx = mp.get_context("spawn")
        self.q: mp.Queue = ctx.Queue()
        self.proc = ctx.Process(target=_serve_fake_openai, args=(self.q, latency_s, script, jitter), daemon=True)

    def __enter__(self) -> str:
        self.proc.start()
        port = self.q.get(timeout=30)
        return f"http://127.0.0.1:{port}/v1"

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.join(5)


def steady_rate(finished_at: list[float], concurrency: int, started: float, warmup_s: float) -> float:
    """Completions per second while every slot was busy, counted in a time window: from `warmup_s`
    after the start (all rollouts start together; their random latencies need a few rollouts to
    drift apart) to the (n - concurrency)-th completion (the last rollout has started; after it the
    queue drains). Counting from the concurrency-th completion instead is biased low: it starts the
    window when the slowest of the first wave ends."""
    times = sorted(finished_at)
    first, last = started + warmup_s, times[len(times) - concurrency - 1]
    inside = sum(1 for t in times if first < t <= last)
    if inside < concurrency:
        raise ValueError(f"{len(times)} completions at concurrency {concurrency}: too few for a steady window; run more waves")
    return inside / (last - first)


def rss_bytes() -> int:
    """This process's resident set now (not the high-water mark, which children inherit)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def search_scaling(make_backend, queries: list[str], concurrency: int = 16) -> dict[str, float]:
    """Queries/s through a search backend (`make_backend(workers)`): in this process, and in 1 and 2 worker
    processes, with `concurrency` queries in flight. Workers are started and warmed before timing."""
    import asyncio

    async def qps(workers: int) -> float:
        backend = make_backend(workers)
        for _ in range(3):  # concurrent, so the pool starts every worker (it starts them as load needs) and each loads the index
            await asyncio.gather(*(backend.search(q, 10) for q in queries[:concurrency]))
        pending = iter(queries)

        async def client() -> None:
            for q in pending:
                await backend.search(q, 10)

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return len(queries) / (time.perf_counter() - start)

    return {name: asyncio.run(qps(workers)) for name, workers in (("inline", 0), ("1 worker", 1), ("2 workers", 2))}


def scaling_rows(benchmark: str, make_backend, queries: list[str]) -> list[Row]:
    """`search_scaling` as result rows: QPS in this process, and 2 workers against 1 (target >= 1.7x)."""
    qps = search_scaling(make_backend, queries)
    one, two = qps["1 worker"], qps["2 workers"]
    return [
        Row(benchmark, "QPS in this process (16 clients)", qps["inline"], "q/s", qps["inline"] / one, "vs 1 worker process", "report", True),
        Row(benchmark, "QPS, 2 worker processes", two, "q/s", two / one, "vs 1 worker process", ">= 1.7", two / one >= 1.7),
    ]
