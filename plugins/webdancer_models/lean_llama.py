"""The steps of a plain Llama model (SmolLM2 included) in the batched server as one loop of tensor operations.

A decode step of a 135M model on two cores is ~30 small layers of a few matmuls each, and in transformers'
modules every layer goes through a dozen `nn.Module` calls, keyword plumbing, decorators, the rotary helper and
an eight-operation RMSNorm: with one request in flight that Python cost is as large as the matmuls themselves
(the batched server decoded one stream slower than `generate`). Here every step of the continuous batching
engine runs the same arithmetic directly: q/k/v and gate/up each as one matmul over stacked weights (bitwise
the outputs of the separate ones), `rms_norm` as one operation, queries and keys rotated together, and the keys
and values through the cache's own update and the attention function the model would call (for decode steps,
the kept keys of `decode_kv`). Models that are not plain Llama keep the stock forward.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from webdancer_models.cpu_linear import CpuLinear
from webdancer_models.engine_step import step_runner

log = logging.getLogger(__name__)


class _Layer:
    def __init__(self, layer: Any, dtype: str):
        attn, mlp = layer.self_attn, layer.mlp
        self.qkv = _fuse([attn.q_proj, attn.k_proj, attn.v_proj], dtype)
        self.gate_up = _fuse([mlp.gate_proj, mlp.up_proj], dtype)
        self.out, self.down = attn.o_proj, mlp.down_proj  # called through .forward: packed (or not) as the server packs them
        self.attn = attn  # what the attention function reads (heads, groups, causal)
        self.norm_in, self.norm_post = layer.input_layernorm.weight.detach(), layer.post_attention_layernorm.weight.detach()
        self.eps = layer.input_layernorm.variance_epsilon
        self.head_dim, self.scaling = attn.head_dim, attn.scaling
        self.q_heads = attn.q_proj.weight.shape[0] // attn.head_dim
        self.rotated_heads = self.q_heads + attn.k_proj.weight.shape[0] // attn.head_dim  # queries and keys
        self.intermediate = mlp.gate_proj.weight.shape[0]


def _fuse(linears: list[Any], dtype: str) -> CpuLinear:
    """One `CpuLinear` over the weights of `linears` (same input). With a packed stacked copy the layers are marked
    `webdancer_fused`, so `pack_linear_weights` gives them none of their own: every step runs through the stack."""
    fused = CpuLinear([linear.weight.detach() for linear in linears], dtype=dtype)
    if fused.packed is not None:
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
    weight = next(model.parameters())
    if str(weight.dtype) != "torch.float32" or weight.device.type != "cpu":
        return "the model is not float32 on the CPU"
    return None


_MODEL_ARGUMENTS = frozenset({"input_ids", "position_ids", "attention_mask", "cache", "use_cache", "logits_to_keep", "inputs_embeds", "labels"})


class LeanLlama:
    """`LeanLlama(model)(**batch_data)` is `model(**batch_data)` for a step of the continuous batching engine (paged
    cache, requests packed in one sequence); its `.logits` are the kept rows' (`logits_to_keep`) or all rows'."""

    def __init__(self, model: Any, dtype: str):
        import torch
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
        from transformers.models.llama.modeling_llama import eager_attention_forward

        self.torch = torch
        # looked up per step, as the modules do: the server installs its own attention function after loading
        config = model.config
        self.attention = lambda: ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, eager_attention_forward)
        self.embed = model.model.embed_tokens.weight.detach()
        self.rotary = model.model.rotary_emb
        self.final_norm = model.model.norm.weight.detach()
        self.final_eps = model.model.norm.variance_epsilon
        self.head = model.lm_head  # called through .forward: packed (or not) as the server packs it
        self.layers = [_Layer(layer, dtype) for layer in model.model.layers]
        self.hidden = model.config.hidden_size
        self.steps = 0

    def __call__(self, **batch: Any) -> Any:
        torch = self.torch
        F = torch.nn.functional
        self.steps += 1
        cache, mask = batch["cache"], batch.get("attention_mask")
        if not (torch.is_tensor(mask) and mask.dim() == 4):  # as transformers' create_causal_mask passes it for a paged cache
            mask = None
        ids, positions = batch["input_ids"], batch["position_ids"]
        tokens = ids.shape[-1]
        attention = self.attention()
        h = F.embedding(ids, self.embed)  # [1, tokens, hidden], a new tensor: the residual adds go in place
        cos, sin = self.rotary(h, position_ids=positions)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # [1, 1, tokens, head dim]
        base = {key: value for key, value in batch.items() if key not in _MODEL_ARGUMENTS}  # what the layers get as **kwargs
        for index, layer in enumerate(self.layers):
            x = F.rms_norm(h, (self.hidden,), layer.norm_in, layer.eps)
            qkv = layer.qkv(x).view(1, tokens, -1, layer.head_dim).transpose(1, 2)  # [1, q + k + v heads, tokens, head dim]
            qk = qkv[:, : layer.rotated_heads]
            qk = qk * cos + _rotate_half(qk) * sin  # queries and keys rotated together (elementwise: the same values)
            kwargs = dict(base)  # the cache's update rewrites some for the attention function, per layer
            keys, values = cache.update(qk[:, layer.q_heads:], qkv[:, layer.rotated_heads:], index, kwargs)
            attended, _ = attention(layer.attn, qk[:, : layer.q_heads], keys, values, mask, dropout=0.0, scaling=layer.scaling, **kwargs)
            h += layer.out.forward(attended.reshape(1, tokens, -1))
            x = F.rms_norm(h, (self.hidden,), layer.norm_post, layer.eps)
            gate_up = layer.gate_up(x)
            h += layer.down.forward(F.silu(gate_up[..., : layer.intermediate]) * gate_up[..., layer.intermediate:])
        keep = batch.get("logits_to_keep")
        if keep is not None and torch.is_tensor(keep):
            h = h[:, keep]
        h = F.rms_norm(h, (self.hidden,), self.final_norm, self.final_eps)
        return _Output(self.head.forward(h))


class _Output:
    __slots__ = ("logits",)

    def __init__(self, logits: Any):
        self.logits = logits


def _rotate_half(x: Any) -> Any:
    import torch

    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def install_lean_llama(model: Any, dtype: str) -> bool:
    """Run the engine's steps of `model` through `LeanLlama`; call it before `pack_linear_weights`. False (stock
    forward, reason logged) when the model is not a plain Llama on the CPU or this transformers lays out its step
    differently."""
    reason = why_not_lean(model)
    if reason is not None:
        log.info("steps run through transformers' modules: %s", reason)
        return False
    runner = step_runner()
    try:
        from transformers.generation.continuous_batching.cache import PagedAttentionCache
    except ImportError:
        return False
    if runner is None:
        return False

    model.webdancer_lean_llama = LeanLlama(model, dtype)
    inner = getattr(runner, "webdancer_stock_forward_step", runner._forward_process_and_sample)

    def step(self: Any, stepped: Any, batch_data: Any, *args: Any, **kwargs: Any) -> Any:
        lean = getattr(stepped, "webdancer_lean_llama", None)
        if lean is not None and isinstance(batch_data.get("cache"), PagedAttentionCache):
            return inner(self, lean, batch_data, *args, **kwargs)
        return inner(self, stepped, batch_data, *args, **kwargs)

    runner.webdancer_stock_forward_step, runner._forward_process_and_sample = inner, step
    return True
