"""Decode steps of a Llama-architecture model as one plain loop of tensor operations.

A decode step of a 135M model on two cores is ~30 small layers of a few matmuls each, and in transformers'
modules every layer goes through a dozen `nn.Module` calls, keyword plumbing, decorators, the rotary helper and
an eight-operation RMSNorm: with one request in flight that Python cost is as large as the matmuls themselves
(the batched server decoded one stream slower than `generate`). Here a decode-only step runs the same
arithmetic directly: q/k/v and gate/up each as one matmul over concatenated weights (bitwise the same outputs
as the separate ones), `rms_norm` as one operation, and the keys and values through the cache's own update
and the kept-keys attention of `decode_kv`. Steps with prefill, and models that are not plain Llama, keep the
stock forward.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from webdancer_models.decode_kv import attend, decode_only

log = logging.getLogger(__name__)


class _Linear:
    """Linear maps with the same input as one, run as `batched_server.pack_linear_weights` runs each layer: fp32 in
    torch's GEMV for one or two rows (each weight as it is) and oneDNN's prepacked kernel above (one stacked
    copy); bf16 always prepacked (fp32 out); torch's own GEMM everywhere when this torch has no oneDNN."""

    def __init__(self, weights: list[Any], dtype: str, gemv_rows: int):
        import torch

        self.bf16 = dtype == "bfloat16"
        self.plain = weights
        stacked = torch.cat(weights)
        self.packed = torch.ops.mkldnn._reorder_linear_weight(stacked.to(torch.bfloat16) if self.bf16 else stacked, None) if _onednn() else None
        self.gemv_rows = 0 if self.bf16 else gemv_rows if self.packed is not None else 1 << 62

    def __call__(self, x: Any) -> Any:
        import torch

        if x.numel() <= self.gemv_rows * x.shape[-1]:
            return torch.cat([torch.nn.functional.linear(x, weight) for weight in self.plain], dim=-1)
        if self.bf16:
            return torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), self.packed, None, "none", [], "").to(x.dtype)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, None, "none", [], "")


def _onednn() -> bool:
    import torch

    return torch.backends.mkldnn.is_available() and hasattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise")


class _Layer:
    def __init__(self, layer: Any, dtype: str, gemv_rows: int):
        attn, mlp = layer.self_attn, layer.mlp
        self.qkv = _fuse([attn.q_proj, attn.k_proj, attn.v_proj], dtype, gemv_rows)
        self.gate_up = _fuse([mlp.gate_proj, mlp.up_proj], dtype, gemv_rows)
        self.out, self.down = attn.o_proj, mlp.down_proj  # called through .forward: packed (or not) as the server packs them
        self.norm_in, self.norm_post = layer.input_layernorm.weight.detach(), layer.post_attention_layernorm.weight.detach()
        self.eps = layer.input_layernorm.variance_epsilon
        self.head_dim, self.scaling = attn.head_dim, attn.scaling
        self.q_heads = attn.q_proj.weight.shape[0] // attn.head_dim
        self.rotated_heads = self.q_heads + attn.k_proj.weight.shape[0] // attn.head_dim  # queries and keys
        self.intermediate = mlp.gate_proj.weight.shape[0]


def _fuse(linears: list[Any], dtype: str, gemv_rows: int) -> _Linear:
    """One `_Linear` over the weights of `linears` (same input). In fp32 the layers are marked `webdancer_fused`, so
    `pack_linear_weights` gives them no packed copy of their own (their prefill runs torch's GEMM): the stacked
    packed copy replaces theirs instead of adding to it. In bf16 they keep their own bf16 copies (prefill stays
    bf16)."""
    fused = _Linear([linear.weight.detach() for linear in linears], dtype, gemv_rows)
    if dtype == "float32" and fused.packed is not None:
        for linear in linears:
            linear.webdancer_fused = True
    return fused


def why_not_lean(model: Any) -> Optional[str]:
    """None when `model` is a plain Llama this path computes exactly as transformers does, else the reason."""
    config = model.config
    if type(model).__name__ != "LlamaForCausalLM" or getattr(config, "model_type", None) != "llama":
        return f"{type(model).__name__} is not LlamaForCausalLM"
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        return "the model has attention or MLP biases"
    if getattr(config, "hidden_act", "silu") != "silu" or getattr(config, "pretraining_tp", 1) != 1:
        return "the model's activation or tensor-parallel split is not the plain Llama one"
    if any(type(layer).__name__ != "LlamaDecoderLayer" for layer in model.model.layers):
        return "the model's decoder layers are not LlamaDecoderLayer"
    if str(next(model.parameters()).dtype) != "torch.float32":
        return "the model is not float32"
    return None


class LeanLlama:
    """`LeanLlama(model)(**batch_data)` is `model(**batch_data)` for a decode-only step of the continuous batching
    engine (one new token per request, keys read through `decode_kv`); its `.logits` are the kept rows'."""

    def __init__(self, model: Any, dtype: str, gemv_rows: int):
        import torch

        self.torch = torch
        self.embed = model.model.embed_tokens.weight.detach()
        self.rotary = model.model.rotary_emb
        self.final_norm = model.model.norm.weight.detach()
        self.final_eps = model.model.norm.variance_epsilon
        self.head = model.lm_head  # called through .forward: packed (or not) as the server packs it
        self.layers = [_Layer(layer, dtype, gemv_rows) for layer in model.model.layers]
        self.hidden = model.config.hidden_size
        self.steps = 0

    def __call__(self, **batch: Any) -> Any:
        torch = self.torch
        self.steps += 1
        F = torch.nn.functional
        cache = batch["cache"]
        ids, positions = batch["input_ids"], batch["position_ids"]
        tokens = ids.shape[-1]
        h = F.embedding(ids, self.embed)  # [1, tokens, hidden], a new tensor: the residual adds go in place
        cos, sin = self.rotary(h, position_ids=positions)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # [1, 1, tokens, head dim]
        base = {key: batch[key] for key in ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_k", "read_index", "write_index", "block_table")}
        for index, layer in enumerate(self.layers):
            x = F.rms_norm(h, (self.hidden,), layer.norm_in, layer.eps)
            qkv = layer.qkv(x).view(1, tokens, -1, layer.head_dim).transpose(1, 2)  # [1, q + k + v heads, tokens, head dim]
            qk = qkv[:, : layer.rotated_heads]
            qk = qk * cos + _rotate_half(qk) * sin  # queries and keys rotated together (elementwise: the same values)
            k = qk[:, layer.q_heads:]
            kwargs = dict(base)
            cache.update(k, qkv[:, layer.rotated_heads:], index, kwargs)
            attended = attend(qk[:, : layer.q_heads], *kwargs["webdancer_decode"], layer.scaling)  # [1, tokens, heads, head dim]
            h += layer.out.forward(attended.reshape(1, tokens, -1))
            x = F.rms_norm(h, (self.hidden,), layer.norm_post, layer.eps)
            gate_up = layer.gate_up(x)
            h += layer.down.forward(F.silu(gate_up[..., : layer.intermediate]) * gate_up[..., layer.intermediate:])
        keep = batch.get("logits_to_keep")
        if keep is not None and torch.is_tensor(keep):
            h = h[:, keep]
        h = F.rms_norm(h, (self.hidden,), self.final_norm, self.final_eps)
        return _Output(self.head.forward(h))

    def runs(self, batch: dict[str, Any]) -> bool:
        """Whether this step is one this path computes: decode-only, keys kept by `decode_kv`."""
        tokens = batch["input_ids"].shape[-1]
        return decode_only(batch["cache"], 0, tokens, batch)


class _Output:
    __slots__ = ("logits",)

    def __init__(self, logits: Any):
        self.logits = logits


def _rotate_half(x: Any) -> Any:
    import torch

    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def install_lean_decode(model: Any, dtype: str, gemv_rows: int) -> bool:
    """Run the engine's decode-only steps of `model` through `LeanLlama`; call it before `pack_linear_weights`. False
    (stock forward everywhere, reason logged) when the model is not a plain Llama or this transformers lays out
    its step differently."""
    reason = why_not_lean(model)
    if reason is not None:
        log.info("decode steps use the stock forward: %s", reason)
        return False
    try:
        from transformers.generation.continuous_batching import model_runner
    except ImportError:
        return False
    runner = getattr(model_runner, "ModelRunner", None)
    if runner is None or not hasattr(runner, "_forward_process_and_sample"):
        return False
    lean = LeanLlama(model, dtype, gemv_rows)
    model.webdancer_lean_decode = lean
    inner = getattr(runner, "webdancer_stock_forward_step", runner._forward_process_and_sample)

    def step(self: Any, stepped: Any, batch_data: Any, *args: Any, **kwargs: Any) -> Any:
        lean_model = getattr(stepped, "webdancer_lean_decode", None)
        if lean_model is not None and lean_model.runs(batch_data):
            return inner(self, lean_model, batch_data, *args, **kwargs)
        return inner(self, stepped, batch_data, *args, **kwargs)

    runner.webdancer_stock_forward_step, runner._forward_process_and_sample = inner, step
    return True
