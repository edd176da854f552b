"""How the batched server runs a linear map on the CPU, in one place for its per-layer packing
(`batched_server.pack_linear_weights`) and the lean Llama loop's stacked q/k/v and gate/up (`lean_llama`)."""

from __future__ import annotations

from typing import Any, Optional

LINEAR_DTYPES = ("float32", "bfloat16")
PLAIN_GEMV_ROWS = 2  # fp32 inputs of at most this many rows go to torch's own GEMV (MKL), faster there than oneDNN's packed kernel


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

    float32: inputs of at most PLAIN_GEMV_ROWS rows through torch's GEMV with each weight as it is (bitwise torch's
    own linear), larger ones through oneDNN's prepacked kernel over one stacked copy (the same sums in another
    order). bfloat16: always the prepacked kernel, with bf16 weights and inputs and fp32 out. Without oneDNN,
    torch's own linear at every size. The prepacked copy costs as much memory again as the weights (fp32)."""

    def __init__(self, weights: list[Any], bias: Optional[Any] = None, dtype: str = "float32"):
        import torch

        check_dtype(dtype)
        if bias is not None and len(weights) != 1:
            raise ValueError("a bias goes with one weight, not a stack")
        self.plain, self.bias, self.bf16 = weights, bias, dtype == "bfloat16"
        self.packed = self.packed_bias = None
        if onednn():
            stacked = weights[0] if len(weights) == 1 else torch.cat(weights)
            self.packed = torch.ops.mkldnn._reorder_linear_weight(stacked.to(torch.bfloat16) if self.bf16 else stacked, None)
            self.packed_bias = bias.to(torch.bfloat16) if self.bf16 and bias is not None else bias

    def __call__(self, x: Any) -> Any:
        import torch

        if self.packed is None or (not self.bf16 and x.numel() <= PLAIN_GEMV_ROWS * x.shape[-1]):
            if len(self.plain) == 1:
                return torch.nn.functional.linear(x, self.plain[0], self.bias)
            return torch.cat([torch.nn.functional.linear(x, weight) for weight in self.plain], dim=-1)
        if self.bf16:
            return torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), self.packed, self.packed_bias, "none", [], "").to(x.dtype)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.packed_bias, "none", [], "")
