"""How the batched server runs a linear map on the CPU, in one place for its per-layer packing
(`batched_server.pack_linear_weights`) and the lean Llama loop's stacked q/k/v and gate/up (`lean_llama`)."""

from __future__ import annotations

from typing import Any, Callable, Optional

LINEAR_DTYPES = ("float32", "bfloat16")
PLAIN_GEMV_ROWS = 2  # fp32 inputs of at most this many rows go to torch's own GEMV (MKL) where that is faster (choose_small_input_kernel)


def check_dtype(dtype: str) -> None:
    if dtype not in LINEAR_DTYPES:
        raise ValueError(f"linear dtype {dtype!r} is not one of {', '.join(LINEAR_DTYPES)}")


def onednn() -> bool:
    """Whether this torch has oneDNN's prepacked linear kernel."""
    import torch

    return torch.backends.mkldnn.is_available() and hasattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise")


def bf16_supported() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX) and torch has oneDNN to do it. Not oneDNN's own
    check (`torch.ops.mkldnn._is_mkldnn_bf16_supported`): it says yes for any AVX512 CPU, where oneDNN emulates bf16
    (measured here with oneDNN held to AVX512_CORE: a training forward + backward 3.4x slower than fp32; native:
    1.8x faster). False without torch."""
    try:
        import torch
    except ImportError:
        return False
    flags = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return torch.backends.mkldnn.is_available() and any(check() for check in flags if check is not None)


class CpuLinear:
    """`x` times the stacked `weights` (output features concatenated in order), plus `bias` (one weight only).

    float32: inputs of at most `plain_rows` rows (PLAIN_GEMV_ROWS, or 0 where `choose_small_input_kernel` timed
    oneDNN faster) through torch's GEMV with each weight as it is (bitwise torch's own linear), larger ones through
    oneDNN's prepacked kernel over one stacked copy (the same sums in another order). bfloat16: always the
    prepacked kernel, with bf16 weights and inputs and fp32 out. Without oneDNN, torch's own linear at every size.
    The prepacked copy costs as much memory again as the weights (fp32)."""

    def __init__(self, weights: list[Any], bias: Optional[Any] = None, dtype: str = "float32"):
        import torch

        check_dtype(dtype)
        if bias is not None and len(weights) != 1:
            raise ValueError("a bias goes with one weight, not a stack")
        self.plain, self.bias, self.bf16 = weights, bias, dtype == "bfloat16"
        self.plain_rows = PLAIN_GEMV_ROWS
        self.packed = self.packed_bias = None
        if onednn():
            stacked = weights[0] if len(weights) == 1 else torch.cat(weights)
            self.packed = torch.ops.mkldnn._reorder_linear_weight(stacked.to(torch.bfloat16) if self.bf16 else stacked, None)
            self.packed_bias = bias.to(torch.bfloat16) if self.bf16 and bias is not None else bias

    def __call__(self, x: Any) -> Any:
        import torch

        if self.packed is None or (not self.bf16 and x.numel() <= self.plain_rows * x.shape[-1]):
            if len(self.plain) == 1:
                return torch.nn.functional.linear(x, self.plain[0], self.bias)
            return torch.cat([torch.nn.functional.linear(x, weight) for weight in self.plain], dim=-1)
        if self.bf16:
            return torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), self.packed, self.packed_bias, "none", [], "").to(x.dtype)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.packed_bias, "none", [], "")


def model_linears(model: Any) -> list[CpuLinear]:
    """The `CpuLinear`s the batched server runs `model` through: its packed layers' and the lean loop's stacked ones."""
    linears = [m.forward for m in model.modules() if isinstance(getattr(m, "forward", None), CpuLinear)]
    lean = getattr(model, "webdancer_lean_llama", None)
    for layer in getattr(lean, "layers", []):
        linears += [layer.qkv, layer.gate_up]
    return linears


def choose_small_input_kernel(linears: list[CpuLinear], trials: int = 5, clock: Optional[Callable[[], float]] = None) -> Optional[tuple[str, float, float]]:
    """Send the fp32 inputs of one or two rows (a request decoding alone) to whichever kernel runs them faster on
    this CPU: torch's GEMV, or oneDNN's packed kernel as for larger batches. It differs by CPU: the model's linear
    layers at one row on two threads took 29.6 ms by GEMV against 38.6 ms packed on a 2-core Xeon, 48 against
    26 ms on a 2-core AMD EPYC (2026-11-29), where a lone request decoded at 16.5 tokens/s against 36 with bf16's
    packed layers. Times both on the layers themselves (one row, alternated `trials` times: ~0.4 s for a 135M
    model), sets every layer's `plain_rows`, and returns (kernel chosen, GEMV ms, packed ms); None when there
    is nothing to choose (no packed fp32 layer). `clock`: time.perf_counter unless a test gives its own."""
    import time

    import torch

    clock = clock or time.perf_counter

    fp32 = [linear for linear in linears if linear.packed is not None and not linear.bf16]
    if not fp32:
        return None
    inputs = [torch.randn(1, 1, linear.plain[0].shape[1]) for linear in fp32]
    timings: dict[int, list[float]] = {PLAIN_GEMV_ROWS: [], 0: []}
    with torch.inference_mode():
        for _ in range(trials):
            for rows in timings:
                for linear in fp32:
                    linear.plain_rows = rows
                start = clock()
                for linear, x in zip(fp32, inputs):
                    linear(x)
                timings[rows].append(clock() - start)
    gemv, packed = (sorted(timings[rows])[trials // 2] for rows in (PLAIN_GEMV_ROWS, 0))
    rows = PLAIN_GEMV_ROWS if gemv <= packed else 0
    for linear in fp32:
        linear.plain_rows = rows
    return ("torch's GEMV" if rows else "oneDNN's packed kernel"), 1000 * gemv, 1000 * packed
