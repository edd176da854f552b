"""The embedded tiny model on this CPU: the machine's limit for it, what each server reaches, and what that
does to a held-out evaluation.

1. Limit. A decode step reads every weight once (batch 1: bytes per step / measured read bandwidth) and
   does 2 FLOPs per parameter per token (large batch: measured matmul throughput / FLOPs per token). At
   concurrency c the limit is min(c x batch-1 limit, compute limit).
2. Tokens/s of `transformers serve` (serve.backend=transformers: one request at a time) and of our batched
   server (serve.backend=batched, the default) at 1, 8 and 16 concurrent clients, each against the limit;
   and the batched server with its steps run through transformers' modules (WEBDANCER_LEAN_LLAMA=0)
   instead of `lean_llama`'s loop, against which the default's gain is measured in the same run.
   Each client sends its requests one after another, so exactly c are in flight (before 2026-11-28 all
   of a run's requests went at once: "8 clients" had 16 in flight, and the batched server's figures were
   flattered by ~1.5x at 8 and ~2x at 1).
   With BENCH_LLAMA_SERVER (a llama.cpp `llama-server` binary) and BENCH_GGUF (the same model converted to
   an F32 GGUF by llama.cpp's convert_hf_to_gguf.py) set, the same clients also measure that native
   server: a reference for what C++ kernels without Python reach on this machine. Neither ships here:
   `bash benchmarks/build_llama_server.sh` builds both (~6 min) and prints the two variables.
   Floor: the model's linear layers alone at 8 rows as the batched server runs them (oneDNN prepacked), back to
   back with no Python between them, on 1 and 2 threads: what these kernels allow at best, against the limit.
   bf16 (serve.linear_dtype=bfloat16, on a CPU with native bf16 matmuls): the same clients, against the limit
   counted for bf16 linear layers (half the weight bytes, bf16 matmul throughput).
3. A held-out evaluation as the quickstart runs it (12 questions, greedy, 3 turns): `transformers serve` at
   agent.concurrency 2 (the quickstart before batching) against the batched server at 8, with the results
   (Pass@1, valid tool-call turns) of both and of the batched server with bf16 linear layers. Uses the quickstart's fine-tuned model when there is one
   (runs/quickstart/sft), else the base model.

Needs `webdancer model export smollm2-135m .webdancer/models/smollm2-135m` and a built web, as
scripts/quickstart.sh leaves them. Run it alone: it measures the CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import BASE_MODEL as MODEL
from _common import OFFLINE, QUICKSTART_CONFIG, QUICKSTART_RUN, ROOT, Row, emit, need_quickstart, tuned_or_base_model
from _common import WEB_ROOT as WEB

sys.path.insert(0, str(ROOT / "plugins"))

QUESTIONS = QUICKSTART_RUN / "qa_eval.jsonl"
BEFORE_TOK_S = 16.7  # the figure for transformers serve, any concurrency


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def machine_limits() -> dict[str, float]:
    """Read bandwidth (GB/s), matmul throughput (GFLOP/s), and the tiny model's bytes and FLOPs per token."""
    import torch
    from transformers import AutoConfig

    big = torch.ones(256 * 1024 * 1024, dtype=torch.float32)  # 1 GiB, far past the caches
    big.sum()
    reads = []
    for _ in range(7):
        start = time.perf_counter()
        big.sum()
        reads.append(big.numel() * 4 / (time.perf_counter() - start))
    del big
    def matmul_flops(dtype: "torch.dtype") -> float:
        x, y = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
        torch.mm(x, y)
        flops = []
        for _ in range(5):
            start = time.perf_counter()
            torch.mm(x, y)
            flops.append(2 * 2048**3 / (time.perf_counter() - start))
        return sorted(flops)[len(flops) // 2]

    cfg = AutoConfig.from_pretrained(MODEL)
    h, i, layers, vocab = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size
    kv = cfg.num_key_value_heads * (h // cfg.num_attention_heads)
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * i  # q, o, k, v, gate, up, down
    matmul_params = layers * per_layer + vocab * h  # + the (tied) output projection
    norm_bytes = 4 * (layers * 2 * h + h)  # fp32 norms; the embedding lookup reads one row
    limits = {"read_gbs": sorted(reads)[len(reads) // 2] / 1e9, "matmul_gflops": matmul_flops(torch.float32) / 1e9,
              "weight_mb": (4 * matmul_params + norm_bytes) / 1e6, "mflop_per_token": 2 * matmul_params / 1e6}
    # serve.linear_dtype=bfloat16: the linear layers read bf16 weights and multiply in bf16
    bf16 = {**limits, "weight_mb": (2 * matmul_params + norm_bytes) / 1e6, "matmul_gflops": matmul_flops(torch.bfloat16) / 1e9}
    return {**limits, "bf16": bf16}


def linear_floor_tok_s(rows: int, runs: list[tuple[str, int]]) -> dict[tuple[str, int], float]:
    """Tokens/s if a decode step of `rows` requests were only the model's linear layers, as the batched server runs them
    (oneDNN prepacked, serve.linear_dtype) on a number of threads, back to back with no Python between them: what these
    kernels allow at best. For each (dtype, threads) of `runs`, the median of 7 steps."""
    import torch
    from transformers import AutoModelForCausalLM
    from webdancer_models.batched_server import pack_linear_weights

    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    inputs = [torch.randn(rows, m.in_features) for m in layers]
    before, packed, floors = torch.get_num_threads(), None, {}
    try:
        for dtype, threads in runs:
            if packed != dtype:  # packing again replaces each layer's forward; the fp32 weights stay as loaded
                pack_linear_weights(model, dtype)
                packed = dtype
            torch.set_num_threads(threads)
            with torch.inference_mode():
                steps = []
                for _ in range(9):
                    start = time.perf_counter()
                    for layer, x in zip(layers, inputs):
                        layer(x)
                    steps.append(time.perf_counter() - start)
            floors[(dtype, threads)] = rows / sorted(steps[2:])[3]
    finally:
        torch.set_num_threads(before)
    return floors


def llama_server(binary: str, gguf: str, log_dir: Path):
    """llama.cpp's server on the F32 GGUF (16 slots, continuous batching, decode on all cores), started and waited for
    as `webdancer serve` starts its servers; use as a context manager, its `base_url` is the /v1 URL."""
    from webdancer_models.serve import ServerProcess

    port = free_port()
    command = [binary, "-m", gguf, "--host", "127.0.0.1", "--port", str(port), "-np", "16", "-c", str(16 * 2048),
               "-t", str(os.cpu_count()), "--no-webui", "--jinja"]
    return ServerProcess(command, f"http://127.0.0.1:{port}/v1", log_dir / "llama-server.log").start(300)


def limit_tok_s(limits: dict[str, float], concurrency: int) -> float:
    per_stream = limits["read_gbs"] * 1e9 / (limits["weight_mb"] * 1e6)
    compute = limits["matmul_gflops"] * 1e9 / (limits["mflop_per_token"] * 1e6)
    return min(concurrency * per_stream, compute)


async def tokens_per_s(base_url: str, model: str, concurrency: int, rounds: int = 2) -> float:
    from webdancer.config import ModelConfig
    from webdancer.llm import ChatClient
    from webdancer.records import Message

    cfg = ModelConfig(base_url=base_url, model=model, max_tokens=64, temperature=0.7, top_p=1.0, stop=[], timeout_s=600)
    async with ChatClient(cfg) as client:
        await client.chat([Message("user", "Say hello.")], max_tokens=4)
        async def one_client(c: int) -> int:
            """`rounds` requests one after another: `concurrency` of these keep exactly that many requests in flight."""
            tokens = 0
            for r in range(rounds):
                reply = await client.chat([Message("user", f"Write a few sentences about the history of computing, part {c * rounds + r}.")])
                tokens += reply.usage.completion_tokens
            return tokens

        start = time.perf_counter()
        tokens = await asyncio.gather(*(one_client(c) for c in range(concurrency)))
        elapsed = time.perf_counter() - start
    return sum(tokens) / elapsed


def evaluate(base_url: str, model: str, concurrency: int, out: Path, web_port: int) -> tuple[float, dict]:
    """`webdancer eval run` on the quickstart's held-out questions, as its pipeline does; (seconds, summary)."""
    cmd = [str(Path(sys.executable).parent / "webdancer"), "eval", "run", "-c", str(QUICKSTART_CONFIG), str(QUESTIONS), "--name", out.name,
           f"run.root={out.parent.parent}", f"run.name={out.parent.name}", f"model.base_url={base_url}", f"model.model={model}", f"agent.concurrency={concurrency}",
           f"web.root={WEB}", f"web.port={web_port}", "tracking.backend=none"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=OFFLINE)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"eval failed: {proc.stderr[-2000:]}")
    results = json.loads((out.parent / "eval" / out.name / "results.json").read_text())
    return elapsed, results["overall"]


def main() -> None:
    from webdancer_models.batched_server import bf16_supported
    from webdancer_models.config import ServeConfig
    from webdancer_models.serve import served_model_name, start_server
    from webdancer_web.server import LocalWebServer

    need_quickstart(MODEL / "config.json", WEB / "manifest.json")
    limits = machine_limits()
    rows = [
        Row("tiny_model_limit", "read bandwidth", limits["read_gbs"], "GB/s", limits["weight_mb"], "MB of weights read per decode step", "report", True),
        Row("tiny_model_limit", "matmul throughput (fp32)", limits["matmul_gflops"], "GFLOP/s", limits["mflop_per_token"], "MFLOP per token", "report", True),
        Row("tiny_model_limit", "limit @ concurrency 1", limit_tok_s(limits, 1), "tok/s", 1.0, "bandwidth-bound", "report", True),
        Row("tiny_model_limit", "limit @ concurrency 8", limit_tok_s(limits, 8), "tok/s", limit_tok_s(limits, 8) / limit_tok_s(limits, 1), "vs concurrency 1", "report", True),
    ]
    bf16 = bf16_supported()
    floors = linear_floor_tok_s(8, [("float32", 1), ("float32", 2)] + ([("bfloat16", 1)] if bf16 else []))
    for threads in (1, 2):
        floor = floors[("float32", threads)]
        rows.append(Row("tiny_model_floor", f"fp32 linear layers alone, 8 rows, {threads} thread{'s' * (threads > 1)}", floor, "tok/s",
                        floor / limit_tok_s(limits, 8), "of the limit @ 8", "report", True))
    if bf16:
        rows.append(Row("tiny_model_limit", "matmul throughput (bf16)", limits["bf16"]["matmul_gflops"], "GFLOP/s", limits["bf16"]["weight_mb"],
                        "MB read per decode step, bf16 linear", "report", True))
        rows.append(Row("tiny_model_limit", "limit @ concurrency 8, bf16 linear", limit_tok_s(limits["bf16"], 8), "tok/s",
                        limit_tok_s(limits["bf16"], 8) / limit_tok_s(limits, 8), "vs the fp32 limit", "report", True))
        floor = floors[("bfloat16", 1)]
        rows.append(Row("tiny_model_floor", "bf16 linear layers alone, 8 rows, 1 thread", floor, "tok/s", floor / limit_tok_s(limits["bf16"], 8),
                        "of the bf16 limit @ 8", "report", True))
    evaluated = tuned_or_base_model() if QUESTIONS.is_file() else None  # the held-out eval's model
    base_port = int(json.loads((WEB / "manifest.json").read_text())["base_url"].rsplit(":", 1)[1])
    web = contextlib.nullcontext() if _busy(base_port) else LocalWebServer(WEB, "127.0.0.1", base_port)
    measured: dict[str, dict[int, float]] = {}
    evals: dict[str, tuple[float, dict]] = {}
    # (label, backend, serve.linear_dtype, eval concurrency): the quickstart before batching, the default, bf16 linear layers
    # and the batched server with its steps through transformers' modules (WEBDANCER_LEAN_LLAMA=0), tokens/s only
    variants = [("transformers", "transformers", "float32", 2), ("batched", "batched", "float32", 8)] + ([("batched-bf16", "batched", "bfloat16", 8)] if bf16 else [])
    variants.append(("batched-modules", "batched", "float32", 0))
    with tempfile.TemporaryDirectory() as tmp, web:
        for key, backend, linear_dtype, eval_concurrency in variants:
            for model_dir in dict.fromkeys([MODEL] + ([evaluated] if evaluated and eval_concurrency else [])):
                cfg = ServeConfig(backend=backend, model_path=str(model_dir), port=free_port(), health_timeout_s=300, linear_dtype=linear_dtype)
                os.environ["WEBDANCER_LEAN_LLAMA"] = "0" if key == "batched-modules" else "1"
                with start_server(cfg, Path(tmp) / "logs") as server:
                    name = served_model_name(cfg)
                    if model_dir == MODEL:
                        measured[key] = {c: asyncio.run(tokens_per_s(server.base_url, name, c)) for c in (1, 8, 16)}
                    if model_dir == evaluated:
                        evals[key] = evaluate(server.base_url, name, eval_concurrency, Path(tmp) / "runs" / key, base_port)
    native = os.environ.get("BENCH_LLAMA_SERVER"), os.environ.get("BENCH_GGUF")
    if all(native):
        with tempfile.TemporaryDirectory() as logs, llama_server(*native, Path(logs)) as server:
            measured["llama.cpp"] = {c: asyncio.run(tokens_per_s(server.base_url, "gguf", c)) for c in (1, 8, 16)}
    for backend, label in (("transformers", "transformers serve"), ("batched", "batched server"), ("batched-bf16", "batched server, bf16 linear"),
                           ("llama.cpp", "llama.cpp server (reference)")):
        limit = limits["bf16"] if backend == "batched-bf16" else limits
        for c, tok_s in measured.get(backend, {}).items():
            rows.append(Row("tiny_model_cpu", f"{label} @ concurrency {c}", tok_s, "tok/s", tok_s / limit_tok_s(limit, c),
                            "of the bf16 limit" if limit is not limits else "of the limit",
                            ">= 0.5" if backend == "batched" and c == 8 else "report", tok_s / limit_tok_s(limit, c) >= 0.5 or backend != "batched" or c != 8))
    b8, t8 = measured["batched"][8], measured["transformers"][8]
    rows.append(Row("tiny_model_cpu", "batched @ 8 vs transformers serve @ 8", b8, "tok/s", b8 / t8, "vs transformers serve, same run", "report", True))
    if "batched-bf16" in measured:
        for c in (1, 8):
            fast = measured["batched-bf16"][c]
            rows.append(Row("tiny_model_cpu", f"bf16 linear @ {c} vs fp32 @ {c}", fast, "tok/s", fast / measured["batched"][c], "of fp32, same run", "report", True))
    for c in (1, 8):
        lean, modules = measured["batched"][c], measured["batched-modules"][c]
        rows.append(Row("tiny_model_cpu", f"lean loop @ {c} vs transformers' modules @ {c}", lean, "tok/s", lean / modules, "of the modules' path, same run", "report", True))
    if "llama.cpp" in measured:
        for c in (1, 8):
            ours, ref = measured["batched"][c], measured["llama.cpp"][c]
            rows.append(Row("tiny_model_cpu", f"batched @ {c} vs llama.cpp server @ {c}", ours, "tok/s", ours / ref, "of llama.cpp, same run", "report", True))
    rows.append(Row("tiny_model_cpu", "batched @ 8 vs the issue's 16.7 tok/s", b8, "tok/s", b8 / BEFORE_TOK_S, "vs 16.7 tok/s", ">= 5", b8 / BEFORE_TOK_S >= 5))
    if evals:
        t_old, t_new = evals["transformers"][0], evals["batched"][0]
        labels = {"transformers": "transformers serve, concurrency 2", "batched": "batched, concurrency 8", "batched-bf16": "batched bf16 linear, concurrency 8"}
        for key, (secs, summary) in evals.items():
            label = labels[key]
            rows.append(Row("tiny_model_eval", f"12-question eval, {label}", secs, "s", summary["pass_at_1"], "Pass@1", "report", True))
            rows.append(Row("tiny_model_eval", f"valid tool-call turns, {label}", summary["valid_tool_call_turns"] * 100, "%", 1.0, "-", "report", True))
        rows.append(Row("tiny_model_eval", "eval speed-up (batched, 8)", t_old / t_new, "x", t_old / t_new, "old wall / new wall", ">= 2", t_old / t_new >= 2))
        if "batched-bf16" in evals:
            t_bf16 = evals["batched-bf16"][0]
            rows.append(Row("tiny_model_eval", "eval speed-up (batched bf16 linear, 8)", t_old / t_bf16, "x", t_new / t_bf16, "vs batched fp32", "report", True))
    emit(rows)


def _busy(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


if __name__ == "__main__":
    main()
