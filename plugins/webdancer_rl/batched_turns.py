"""The TRL engine's rollout turns from the batched server's engine, in this process (`rl.trl_rollouts`).

`model.generate` on the policy pads each turn's batch to its longest context, keeps decoding every row until the
longest reply ends, and prefills every rollout's whole context again at each turn. The continuous batching engine
that `webdancer serve` runs on the CPU (`webdancer_models.batched_server`) runs each request to its own end,
splits attention per request, and keeps the KV blocks of finished turns, so the next turn's prompt (the same
tokens and the new ones) prefills only what is new. Rollouts do not wait for each other: one whose tool has
returned joins the running batch with its next turn while the others decode (`run_rollouts(lockstep=False)`).

It runs on a copy of the policy made for one batch of rollouts and dropped after it: the engine packs and stacks
the weights it is given and keeps KV blocks, all of which an optimizer step would make stale, and nothing of it
may touch the model being trained.

Kept beside TRL's colocated vLLM (`rl.trl_rollouts=vllm`), measured on a 2-core CPU (benchmarks/rl_rollout_engines.py):
the same generation speed, and a step 1.5x faster (no start-up compile; the policy samples itself, so TRL computes no
extra forward pass for its importance-sampling correction).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from dataclasses import dataclass
from typing import Any, Iterator

from webdancer_rl.rollout import Generate

BLOCK_TOKENS = 64  # tokens per KV block, as the server's default


@dataclass(frozen=True)
class EngineSettings:
    """What the engine needs besides the model: its KV cache and chunking (serve.*), sampling (rl.*), a seed."""

    kv_cache_tokens: int
    max_batch_tokens: int
    temperature: float
    top_p: float
    seed: int

    @classmethod
    def of(cls, cfg: Any, limits: Any, seed: int) -> "EngineSettings":
        """The engine for `cfg`'s rollouts (a WebdancerConfig and its RolloutLimits): serve.*'s cache, cut to what one
        step's rollouts can fill (the cache is allocated whole: a 2-question x 2-rollout step of the tiny model holds
        14k tokens, not serve's 32k, 0.8 GB less) and grown so that one rollout always fits; rl.*'s sampling."""
        longest = limits.max_prompt_length + limits.max_response_length
        in_flight = cfg.rl.train_batch_size * cfg.rl.n_rollouts
        cache = max(longest, min(cfg.serve.kv_cache_tokens, in_flight * longest))
        return cls(cache, cfg.serve.max_batch_tokens, cfg.rl.temperature, cfg.rl.top_p, seed)


@contextlib.contextmanager
def batched_turns(policy: Any, tokenizer: Any, eos: list[int], settings: EngineSettings) -> Iterator[Generate]:
    """A `Generate` over an engine on a copy of `policy` (as it is now), stopped when the block ends."""
    import torch
    from webdancer_models.batched_server import BatchedGenerator, Sampling

    from webdancer.memory import release_freed_memory

    model = copy.deepcopy(policy).requires_grad_(False)
    for parameter in model.parameters():
        parameter.grad = None
    # One thread count for every step: the server's timed choice between counts sets torch's thread count from
    # its engine thread, which would outlive this batch in the trainer's process.
    engine = BatchedGenerator(model, tokenizer, settings.max_batch_tokens, -(-settings.kv_cache_tokens // BLOCK_TOKENS), BLOCK_TOKENS,
                              settings.seed, decode_threads=torch.get_num_threads(), eos=eos)

    async def generate(sequences: list[list[int]], budgets: list[int]) -> list[list[int]]:
        replies = await asyncio.gather(*(engine.generate(ids, Sampling(budget, settings.temperature, settings.top_p))
                                         for ids, budget in zip(sequences, budgets)))
        return [tokens for _, tokens, _ in replies]

    try:
        yield generate
    finally:
        engine.stop()
        engine = model = None  # dropped here, so that what they held is free to give back
        release_freed_memory()  # the engine's weights copy and KV cache, before the update allocates its own
