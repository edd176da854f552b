"""vLLM (serve.backend=vllm, its CPU build) against our batched server (serve.backend=batched) on the embedded tiny
model: what each costs to start and what each serves, measured in one run, alternating.

1. Time to ready (`webdancer serve`'s start: process up to /health answering): vLLM with an empty compile cache
   (cold), with the cache the cold start left (warm), with --enforce-eager (no compilation), and ours.
2. Tokens/s at 1, 8, 16 and 32 clients (each client sends its requests one after another, so exactly that many are
   in flight; 64 new tokens a request, temperature 0.7) for ours (fp32), vLLM fp32 and vLLM bf16, for BENCH_ROUNDS
   rounds (default 2), the engines alternating within each round; the median and the spread of the rounds. Then the
   resident memory of each server's process tree.
3. The quickstart's 12-question held-out eval (greedy, 3 turns) against each fp32 engine, started for it: wall time
   including the start, and Pass@1.

Needs what scripts/quickstart.sh leaves (the exported model, the built web) and scripts/setup_vllm.sh. Run it alone:
it measures the CPU (~25 minutes on 2 cores). BENCH_PARTS=start,tok_s,eval picks parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import BASE_MODEL as MODEL
from _common import ROOT, Row, emit, need_quickstart, tuned_or_base_model
from _common import WEB_ROOT as WEB
from tiny_model_serving import QUESTIONS, _busy, evaluate, free_port, tokens_per_s

sys.path.insert(0, str(ROOT / "plugins"))

CLIENTS = (1, 8, 16, 32)
ENGINES = {  # label: (serve.backend, serve.dtype)
    "batched fp32": ("batched", ""),
    "vllm fp32": ("vllm", "float32"),
    "vllm bf16": ("vllm", "bfloat16"),
}


def tree_rss_gb(pid: int) -> float:
    """Resident memory of a process and all its descendants (vLLM runs an API server, an engine core and a worker)."""
    import psutil

    root = psutil.Process(pid)
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total / 1e9


def serve(label: str, model: Path, logs: Path, cache: Path | None = None, extra: tuple[str, ...] = ()):
    from webdancer_models.config import ServeConfig
    from webdancer_models.serve import start_server

    backend, dtype = ENGINES[label]
    cfg = ServeConfig(backend=backend, model_path=str(model), port=free_port(), health_timeout_s=600, dtype=dtype, extra_args=list(extra))
    if cache is not None:
        os.environ.update(VLLM_CACHE_ROOT=str(cache), TORCHINDUCTOR_CACHE_DIR=str(cache / "inductor"))
    try:
        started = time.perf_counter()
        server = start_server(cfg, logs)
        return server, time.perf_counter() - started, cfg
    finally:
        if cache is not None:
            os.environ.pop("VLLM_CACHE_ROOT"), os.environ.pop("TORCHINDUCTOR_CACHE_DIR")


def measure_start(tmp_path: Path, cache: Path) -> list[Row]:
    """Time to ready: vLLM with an empty compile cache, with what that start left, eager; ours."""
    ready: dict[str, float] = {}
    for key, label, extra in (("vllm cold", "vllm fp32", ()), ("vllm warm", "vllm fp32", ()), ("vllm eager", "vllm fp32", ("--enforce-eager",)),
                              ("batched", "batched fp32", ())):
        server, seconds, _ = serve(label, MODEL, tmp_path / "logs", cache if label.startswith("vllm") else None, extra)
        server.stop()
        ready[key] = seconds
    return [Row("serve_engines_start", f"time to ready, {key}", seconds, "s", seconds / ready["batched"], "of ours", "report", True)
            for key, seconds in ready.items()]


def measure_tok_s(tmp_path: Path, cache: Path, rounds: int) -> list[Row]:
    """Tokens/s at each client count, the engines alternating within each round; the resident memory of each."""
    from webdancer_models.serve import served_model_name

    tok_s: dict[str, dict[int, list[float]]] = {label: {c: [] for c in CLIENTS} for label in ENGINES}
    rss: dict[str, float] = {}
    for _ in range(rounds):
        for label in ENGINES:
            server, _, cfg = serve(label, MODEL, tmp_path / "logs", cache if label.startswith("vllm") else None)
            with server:
                for c in CLIENTS:
                    tok_s[label][c].append(asyncio.run(tokens_per_s(server.base_url, served_model_name(cfg), c)))
                rss[label] = max(rss.get(label, 0.0), tree_rss_gb(server.proc.pid))
    rows = []
    for label in ENGINES:
        for c in CLIENTS:
            runs, ours = tok_s[label][c], statistics.median(tok_s["batched fp32"][c])
            rows.append(Row("serve_engines_tok_s", f"{label} @ {c} clients", statistics.median(runs), "tok/s", statistics.median(runs) / ours,
                            f"of ours (rounds {min(runs):.1f}-{max(runs):.1f})", "report", True))
        rows.append(Row("serve_engines_rss", f"{label} resident memory", rss[label], "GB", rss[label] / rss["batched fp32"], "of ours", "report", True))
    return rows


def measure_eval(tmp_path: Path, cache: Path) -> list[Row]:
    """The quickstart's held-out eval against each fp32 engine, started for it (vLLM with whatever compile cache the
    parts before left): wall time including the start, Pass@1."""
    from webdancer_models.serve import served_model_name
    from webdancer_web.server import LocalWebServer

    if not QUESTIONS.is_file():
        return []
    base_port = int(json.loads((WEB / "manifest.json").read_text())["base_url"].rsplit(":", 1)[1])
    web = contextlib.nullcontext() if _busy(base_port) else LocalWebServer(WEB, "127.0.0.1", base_port)
    evals: dict[str, tuple[float, dict]] = {}
    with web:
        for label in ("batched fp32", "vllm fp32"):
            started = time.perf_counter()
            server, _, cfg = serve(label, tuned_or_base_model(), tmp_path / "logs", cache if label.startswith("vllm") else None)
            with server:
                _, summary = evaluate(server.base_url, served_model_name(cfg), 8, tmp_path / "runs" / label.replace(" ", "-"), base_port)
            evals[label] = (time.perf_counter() - started, summary)
    rows = []
    for label, (seconds, summary) in evals.items():
        rows.append(Row("serve_engines_eval", f"12-question eval incl. start, {label}", seconds, "s", seconds / evals["batched fp32"][0],
                        "of ours", "report", True))
        rows.append(Row("serve_engines_eval", f"Pass@1, {label}", summary["pass_at_1"] * 100, "%", summary["valid_tool_call_turns"],
                        "valid tool-call turns", "report", True))
    return rows


def main() -> None:
    need_quickstart(MODEL / "config.json", WEB / "manifest.json")
    rounds = int(os.environ.get("BENCH_ROUNDS", "2"))
    parts = os.environ.get("BENCH_PARTS", "start,tok_s,eval").split(",")  # a subset to run
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "vllm-cache"  # empty at first: the first vLLM start is cold
        if "start" in parts:
            rows += measure_start(Path(tmp), cache)
        if "tok_s" in parts:
            rows += measure_tok_s(Path(tmp), cache, rounds)
        if "eval" in parts:
            rows += measure_eval(Path(tmp), cache)
    emit(rows)


if __name__ == "__main__":
    main()
