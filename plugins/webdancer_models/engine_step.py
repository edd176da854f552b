"""The continuous batching engine's per-step method, which the batched server wraps (sampling, decode threads, the
lean Llama loop): found in one place, so every wrapper agrees on whether this transformers has it."""

from __future__ import annotations

from typing import Any, Optional


def step_runner() -> Optional[Any]:
    """transformers' `ModelRunner` class when it has `_forward_process_and_sample` (one step: forward, logits
    processing, sampling); None where this transformers lays its engine out differently (the stock step stays)."""
    try:
        from transformers.generation.continuous_batching import model_runner
    except ImportError:
        return None
    runner = getattr(model_runner, "ModelRunner", None)
    return runner if runner is not None and hasattr(runner, "_forward_process_and_sample") else None
