"""Decode steps of the batched server at agent-sized contexts: kept keys (decode_kv.py) against the engine's own
read path, and against the limit with the keys and values counted.

An agent's request carries its whole trajectory (system prompt, tool calls, page excerpts): 2,000+ tokens. A
decode step then reads, besides the weights, every request's keys and values at every layer: at 8 requests of
2,300 tokens that is 850 MB against 540 MB of fp32 weights. transformers' engine on a CPU also copies them out
of its pages first (a gather per layer per step); the batched server keeps a padded copy and appends to it.
Both run here in one process on the same 8 prompts (alternating, twice each); the figure is the median step
with all 8 decoding. Limit: (weights + the batch's keys and values) / measured read bandwidth per step.
A third variant runs the kept keys with this (the loading) thread holding an OpenMP pool again, as every engine did
before `webdancer_models/openmp.py` freed it: the engine's thread then pays a wake-up per parallel region.

Needs `webdancer model export smollm2-135m .webdancer/models/smollm2-135m`. Run it alone: it measures the CPU.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

from _common import BASE_MODEL as MODEL
from _common import ROOT, Row, emit, need_quickstart

sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

REQUESTS, NEW_TOKENS = 8, 48
CONTEXT_WORDS = 600  # ~2,300 tokens of prompt each


def spread(seconds: list[float]) -> str:
    return f"{1000 * min(seconds):.0f}-{1000 * max(seconds):.0f} ms"


def main() -> None:
    import torch
    from tiny_model_serving import machine_limits
    from transformers.generation.continuous_batching import model_runner
    from transformers.generation.continuous_batching.cache import PagedAttentionCache
    from webdancer_models import batched_server as bs
    from webdancer_models.openmp import release_thread_pool

    need_quickstart(MODEL / "config.json")
    limits = machine_limits()
    steps: list[float] = []
    generator = bs.BatchedGenerator.from_dir(MODEL, 512, 1024, 64, 0)
    runner = model_runner.ModelRunner
    stock_step = runner._forward_process_and_sample

    def timed(self, model, batch_data, *args, **kwargs):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        out = stock_step(self, model, batch_data, *args, **kwargs)
        if batch_data["input_ids"].shape[-1] == REQUESTS:
            steps.append(time.perf_counter() - start)
        return out

    runner._forward_process_and_sample = timed
    background = "Background: " + " ".join(f"word{j}" for j in range(CONTEXT_WORDS))
    prompts = [generator.prompt_ids([{"role": "user", "content": f"{background} Write a long story about dragon {i}."}], {}) for i in range(REQUESTS)]
    context = sum(len(p) for p in prompts) / REQUESTS + NEW_TOKENS / 2

    async def batch() -> None:
        await asyncio.gather(*(generator.generate(p, bs.Sampling(NEW_TOKENS, 0.0, 1.0)) for p in prompts))

    medians: dict[str, list[float]] = {"kept": [], "gather": [], "pool": []}
    variants = (("kept", PagedAttentionCache.webdancer_kept_update), ("gather", PagedAttentionCache.webdancer_stock_update),
                ("pool", PagedAttentionCache.webdancer_kept_update))
    try:
        for _ in range(2):
            for key, update in variants:
                PagedAttentionCache.update = update
                if key == "pool":  # this thread runs a parallel region again: libgomp gives it a pool, as before openmp.py
                    torch.ones(1 << 22).sum()
                steps.clear()
                asyncio.run(batch())
                medians[key].append(statistics.median(steps))
                if key == "pool":
                    release_thread_pool()
    finally:
        PagedAttentionCache.update = PagedAttentionCache.webdancer_kept_update
        generator.stop()
    config = generator.model.config
    kv_bytes_per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * (config.hidden_size // config.num_attention_heads) * 4
    step_bytes = limits["weight_mb"] * 1e6 + REQUESTS * context * kv_bytes_per_token
    limit_step = step_bytes / (limits["read_gbs"] * 1e9)
    kept, gather, pool = min(medians["kept"]), min(medians["gather"]), min(medians["pool"])
    rows = [
        Row("agent_context_decode", f"decode step, 8 x {context:.0f} tokens, kept keys ({spread(medians['kept'])})", 1000 * kept, "ms",
            limit_step / kept, "of the limit with KV reads", "report", True),
        Row("agent_context_decode", f"decode step, engine's gather ({spread(medians['gather'])})", 1000 * gather, "ms", gather / kept,
            "gather step / kept step", ">= 1.5", gather / kept >= 1.5),
        Row("agent_context_decode", f"decode step, the loader's OpenMP pool kept ({spread(medians['pool'])})", 1000 * pool, "ms", pool / kept,
            "pool kept / freed (openmp.py)", "report", True),
        Row("agent_context_decode", "decode tokens/s @ 8, kept keys", REQUESTS / kept, "tok/s", step_bytes / 1e6, "MB read per step (weights + KV)",
            "report", True),
    ]
    emit(rows)


if __name__ == "__main__":
    main()
