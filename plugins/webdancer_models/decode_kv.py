"""Decode steps that attend over a persistent, padded copy of the decoding requests' keys and values.

transformers' continuous batching keeps keys and values in pages and, on a CPU (no paged-attention kernel),
every layer of every step copies each request's whole history out of the pages (`index_select`) before
attending over it. With agent contexts that copy dominates: 8 requests of 2,400 tokens move 28 MB per layer,
and a decode step took 290 ms of which the linear layers took ~50 (2026-11-28, 2-core Xeon). Between two decode
steps the batch usually only grows by one token per request, so `DecodeKV` keeps each layer's keys and values
of the batch in a padded buffer `[requests, kv heads, capacity, head dim]`, appends the new token in place, and
gathers from the pages again only when the batch changes (a request joins or leaves, a prefill chunk ran, a
request outgrows the capacity). Attention is then one batched matmul-softmax-matmul per layer, masked past
each request's length, instead of one SDPA call per request.

The pages stay the source of truth (every new key is written there too); whether a step only appended is
checked against the previous step's read indices, so a moved or reused page can only cause a re-gather.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional

CAPACITY_STEP = 128  # buffer lengths are rounded up to this, with at least this much room to append


@dataclass
class StepLayout:
    """Where each decoding request's keys sit in this step (shared by every layer of the step)."""

    read_index: Any  # the engine's read index of this step (identity marks the step)
    history: Any  # a copy of it, to compare with the next step's
    lengths: Any  # [requests] keys per request, the new token included
    longest: int
    mask: Any  # [requests, 1, 1, longest] additive: 0 where a key exists, -inf past a request's length
    gather: Optional[Any]  # [requests * capacity] page slots to re-gather from, None when only appending
    capacity: int
    keep: bool  # whether the buffers are kept for the next step (within the memory budget)
    head_rows: Optional[Any] = None  # `gather` per kv head, made by the step's first layer (all layers have the same heads)


class DecodeKV:
    """Padded keys/values of the decoding batch, per layer, appended to step by step.

    `budget_tokens` bounds each layer's buffers (requests x capacity tokens), so all of them together take at most
    what a paged cache of that many tokens takes; a batch above it is gathered every step without keeping."""

    def __init__(self, budget_tokens: int):
        self.budget_tokens = budget_tokens
        self.layout: Optional[StepLayout] = None
        self.buffers: dict[int, tuple[Any, Any]] = {}
        self.regathers = 0
        self.appends = 0
        self.releases = 0
        self.idle_since: Optional[float] = None  # when the engine last found no request (None: it has some)

    def invalidate(self) -> None:
        """A step that was not decode-only ran: the buffers miss its tokens."""
        self.layout = None

    def release(self) -> None:
        """The engine has no request left: free the buffers (up to a paged cache's worth of memory) until it has."""
        self.layout = None
        self.buffers.clear()
        self.releases += 1

    def step_layout(self, read_index: Any, cu_seq_lens_k: Any) -> StepLayout:
        import torch

        if self.layout is not None and self.layout.read_index is read_index:
            return self.layout
        cu = cu_seq_lens_k.to(torch.long)
        lengths = cu[1:] - cu[:-1]
        longest = int(lengths.max())
        previous = self.layout
        appended = (previous is not None and previous.keep and previous.lengths.shape == lengths.shape and longest <= previous.capacity
                    and bool(torch.equal(lengths, previous.lengths + 1)) and self._same_history(read_index, cu, previous.history))
        positions = torch.arange(longest)
        valid = positions.unsqueeze(0) < lengths.unsqueeze(1)
        mask = torch.zeros(lengths.numel(), 1, 1, longest).masked_fill_(~valid[:, None, None, :], float("-inf"))
        if appended:
            capacity, gather, keep = previous.capacity, None, True
            self.appends += 1
        else:
            capacity = -(-(longest + CAPACITY_STEP) // CAPACITY_STEP) * CAPACITY_STEP
            keep = lengths.numel() * capacity <= self.budget_tokens
            slots = torch.arange(capacity).unsqueeze(0)
            source = cu[:-1].unsqueeze(1) + torch.minimum(slots, (lengths - 1).unsqueeze(1))  # past a request's end: its last key (masked)
            gather = read_index[source.reshape(-1)]
            self.regathers += 1
        self.layout = StepLayout(read_index, read_index.clone(), lengths, longest, mask, gather, capacity, keep)
        return self.layout

    @staticmethod
    def _same_history(read_index: Any, cu: Any, history: Any) -> bool:
        """Whether this step's slots, without each request's newest key, are exactly the previous step's."""
        import torch

        if read_index.numel() != history.numel() + cu.numel() - 1:
            return False
        old = torch.ones(read_index.numel(), dtype=torch.bool)
        old[cu[1:] - 1] = False
        return bool(torch.equal(read_index[old], history))

    def keys_values(self, layer_idx: int, k_cache: Any, v_cache: Any, new_k: Any, new_v: Any, layout: StepLayout) -> tuple[Any, Any]:
        """[requests, kv heads, longest, head dim] keys and values of this layer (views of the buffers).
        `k_cache`/`v_cache` are the pages as [slots, kv heads, head dim], the new keys already written to them;
        `new_k`/`new_v` are [requests, kv heads, head dim]."""
        import torch

        requests, heads, dim = new_k.shape
        if layout.gather is not None:
            buffers = self.buffers.get(layer_idx)
            shape = (requests, heads, layout.capacity, dim)
            if not layout.keep or buffers is None or buffers[0].shape != shape:
                buffers = (torch.empty(shape, dtype=k_cache.dtype), torch.empty(shape, dtype=v_cache.dtype))
                if layout.keep:
                    self.buffers[layer_idx] = buffers
            if layout.head_rows is None:
                # row (slot * kv heads + head) of the pages seen as [slots * kv heads, head dim], in the buffers' order
                slots = layout.gather.view(requests, 1, layout.capacity)
                layout.head_rows = (slots * heads + torch.arange(heads).view(1, heads, 1)).reshape(-1)
            for buffer, cache in zip(buffers, (k_cache, v_cache)):
                torch.index_select(cache.view(-1, dim), 0, layout.head_rows, out=buffer.view(-1, dim))
        else:
            buffers = self.buffers[layer_idx]
            rows, at = torch.arange(requests), layout.lengths - 1
            buffers[0][rows, :, at] = new_k
            buffers[1][rows, :, at] = new_v
        return buffers[0][:, :, : layout.longest], buffers[1][:, :, : layout.longest]


def attend(query: Any, keys: Any, values: Any, mask: Any, scaling: float) -> Any:
    """Attention of one new token per request: query [1, heads, requests, head dim] (the model's layout), keys and
    values [requests, kv heads, longest, head dim]; returns [1, requests, heads, head dim] as the engine expects."""
    import torch

    requests, kv_heads = keys.shape[0], keys.shape[1]
    heads, dim = query.shape[1], query.shape[3]
    q = query[0].transpose(0, 1).reshape(requests, kv_heads, heads // kv_heads, dim)  # query head h reads kv head h // group
    scores = torch.matmul(q, keys.transpose(-1, -2)).mul_(scaling).add_(mask)
    out = torch.matmul(torch.softmax(scores, dim=-1), values)
    return out.reshape(requests, heads, dim).unsqueeze(0)


def decode_kv_of(cache: Any) -> DecodeKV:
    """The DecodeKV of one paged cache (one engine), made on its first decode step; its buffers hold at most as
    many tokens as the cache."""
    state = getattr(cache, "webdancer_decode_kv", None)
    if state is None:
        state = cache.webdancer_decode_kv = DecodeKV(budget_tokens=int(getattr(cache, "max_tokens_read", 0) or 0))
    return state


def install_decode_kv() -> bool:
    """Route decode-only steps' cache reads through each cache's DecodeKV (the attention function set by
    `install_per_request_attention` picks them up). False when this transformers lays out its paged cache
    differently (the stock gather stays)."""
    try:
        import torch
        from transformers.generation.continuous_batching import cache as cb_cache
        from transformers.generation.continuous_batching.cache_allocators.full_attention import FullAttentionCacheAllocator
    except ImportError:
        return False
    paged = getattr(cb_cache, "PagedAttentionCache", None)
    if paged is None or not hasattr(paged, "update"):
        return False
    stock = getattr(paged, "webdancer_stock_update", paged.update)

    def update(self: Any, key_states: Any, value_states: Any, layer_idx: int, kwargs: dict[str, Any]) -> Any:
        allocator = self.layer_to_allocator[layer_idx]
        decode_kv = decode_kv_of(self)
        cu_q = kwargs.get("cu_seq_lens_q")
        tokens = key_states.shape[2]
        # one query token per request, as many key sequences as requests (padded batches are not used on a CPU)
        decoding = (kwargs.get("block_table") is None and type(allocator) is FullAttentionCacheAllocator and key_states.shape[0] == 1
                    and cu_q is not None and cu_q.numel() == tokens + 1 and hasattr(allocator, "_kv_token_views"))
        if decoding:
            read_index, cu_k = kwargs["read_index"][allocator.index], kwargs["cu_seq_lens_k"][allocator.layer_type]
            decoding = read_index.numel() > 0 and cu_k.numel() == tokens + 1
        if not decoding:
            decode_kv.invalidate()
            return stock(self, key_states, value_states, layer_idx, kwargs)
        kwargs["cu_seq_lens_k"] = cu_k.to(torch.int32)
        kwargs["max_length_k"] = kwargs["max_length_k"][allocator.layer_type]
        layout = decode_kv.step_layout(read_index, cu_k)
        k_cache, v_cache = allocator._kv_token_views[layer_idx]
        new_k, new_v = (x[0].transpose(0, 1) for x in (key_states, value_states))  # [requests, kv heads, head dim]
        write_index = kwargs["write_index"][allocator.index]
        k_cache.index_copy_(0, write_index, new_k)
        v_cache.index_copy_(0, write_index, new_v)
        keys, values = decode_kv.keys_values(layer_idx, k_cache, v_cache, new_k, new_v, layout)
        kwargs["webdancer_decode"] = (keys, values, layout.mask)
        return key_states, value_states

    paged.webdancer_stock_update, paged.webdancer_kept_update, paged.update = stock, update, update
    _release_when_idle()  # where this transformers has no such hook, the buffers wait for the next batch
    return True


RELEASE_AFTER_IDLE_S = 2.0  # a pause between an agent's turns (tool calls) keeps the buffers; an idle server frees them


def _release_when_idle() -> bool:
    """Free the kept keys when the engine has found no request to run for RELEASE_AFTER_IDLE_S. Its thread asks for
    the next batch between steps and about every 0.1 s while idle, so the buffers are freed on the thread that uses
    them, with no lock."""
    try:
        from transformers.generation.continuous_batching.continuous_api import ContinuousBatchProcessor
    except ImportError:
        return False
    if not hasattr(ContinuousBatchProcessor, "prepare_next_batch"):
        return False
    stock = getattr(ContinuousBatchProcessor, "webdancer_stock_prepare", ContinuousBatchProcessor.prepare_next_batch)

    def prepare_next_batch(self: Any, *args: Any, **kwargs: Any) -> Any:
        found = stock(self, *args, **kwargs)
        kept = getattr(getattr(self, "cache", None), "webdancer_decode_kv", None)
        if kept is not None:
            now = time.monotonic()
            if found:
                kept.idle_since = None
            elif kept.idle_since is None:
                kept.idle_since = now
            elif kept.buffers and now - kept.idle_since >= RELEASE_AFTER_IDLE_S:
                kept.release()
        return found

    ContinuousBatchProcessor.webdancer_stock_prepare, ContinuousBatchProcessor.prepare_next_batch = stock, prepare_next_batch
    return True
