"""An OpenAI chat-completions server that batches concurrent requests on the CPU (`serve.backend: batched`).

Generation is transformers' continuous batching engine (paged attention, one forward pass for every
request in flight): at 8 concurrent clients a 135M model on two cores decodes several times the tokens
of one stream, because each decode step reads the weights once for the whole batch. `transformers serve
--continuous-batching` runs the same engine but fixes the sampling settings of the first request for the
server's lifetime and ignores `stop`; this server keeps every request's own `temperature`, `top_p`,
`max_tokens` and `stop` (the agent stops at `<tool_response>`), so its answers are what any OpenAI server
would give. Temperature 0 is exact greedy decoding (the same logits scaled so one token has probability 1).

Kept beside vLLM's CPU build (`serve.backend: vllm`), measured on a 2-core CPU (benchmarks/serve_engines.py): the same
tokens/s in float32 at 1-32 clients, 7-15x faster to start, 30 % less memory; the 12-question eval 1.5x faster
with start-up. It is the CPU default for serving and for TRL's rollouts (webdancer_rl.batched_turns).

Run: `python -m webdancer_models.batched_server MODEL_DIR --port 8000` (what `webdancer serve` starts).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Iterator, Optional

from webdancer_models.cpu_linear import (
    LINEAR_DTYPES,
    CpuLinear,
    bf16_supported,
    check_dtype,
    choose_small_input_kernel,
    model_linears,
    onednn,
)
from webdancer_models.decode_kv import DecodeKV, attend, decode_kv_of, install_decode_kv
from webdancer_models.engine_step import step_runner
from webdancer_models.lean_llama import install_lean_llama
from webdancer_models.openmp import release_thread_pool

log = logging.getLogger("webdancer.batched_server")

# Request fields this server honours; the other OpenAI fields clients commonly send are accepted and
# have no effect on a local model (user, metadata ...). Fields that would change the answer and that it
# cannot honour are refused with a 400 naming them, never silently dropped.
REFUSED = {
    "n": "one choice per request (send the request n times)",
    "seed": "a per-request seed (batched sampling depends on the batch; use temperature 0 for reproducible output, or serve.backend=transformers)",
    "logprobs": "log probabilities",
    "top_logprobs": "log probabilities",
    "tools": "OpenAI tool definitions (the agent writes tool calls as text in its turns)",
    "response_format": "structured output",
    "logit_bias": "logit biases",
    "frequency_penalty": "penalties",
    "presence_penalty": "penalties",
}
DEFAULTS_OFF = {"n": 1, "logprobs": False, "frequency_penalty": 0, "presence_penalty": 0}


class BadRequest(ValueError):
    """A request this server answers with HTTP 400 and this message."""


@dataclass
class Sampling:
    """One request's decoding settings, as the engine's per-request logits processors take them."""

    max_new_tokens: int
    temperature: float
    top_p: float
    stop: list[str] = field(default_factory=list)

    @property
    def processor_kwargs(self) -> dict[str, Any]:
        if self.temperature <= 0:
            # Greedy: logits / 1e-30 leave one token with probability 1 after the softmax (any other is at least a
            # float32 step below it, i.e. >= 1e24 below after scaling, and exp of that is exactly 0).
            return {"temperature": GREEDY_TEMPERATURE, "top_p": 1.0}
        return {"temperature": float(self.temperature), "top_p": float(self.top_p)}


GREEDY_TEMPERATURE = 1e-30


def install_fast_top_p() -> bool:
    """Replace the engine's per-request top-p (a full vocabulary sort of every row at every step, ~25 % of a
    decode step at batch 8 on two cores) with one that skips rows at top_p 1 (greedy requests included) and
    finds the nucleus among the 256 most likely tokens, sorting the whole row only when the nucleus is larger.
    Same tokens kept. Returns False (and the stock processor stays) when this transformers lays things out
    differently."""
    try:
        import torch
        from transformers.generation.continuous_batching import cb_logits_processors as cbl
        from transformers.generation.logits_process import TopPLogitsWarper

        stock = cbl.CLASSIC_TO_CB_PROCESSORS_MAP[TopPLogitsWarper]
    except (ImportError, AttributeError, KeyError):
        return False
    if getattr(stock, "webdancer_fast", False):  # installed already (a second generator in this process)
        return True

    class FastTopP(stock):  # type: ignore[misc, valid-type]
        webdancer_fast = True

        def __call__(self, scores: "torch.Tensor", tensor_arg: "torch.Tensor") -> "torch.Tensor":
            top_p = tensor_arg[: scores.size(0)].view(dtype=torch.float32)
            rows = (top_p < 1.0).nonzero().squeeze(-1)
            if rows.numel() == 0:
                return scores
            sub, p = scores[rows], top_p[rows].unsqueeze(-1)
            values, index = sub.topk(min(256, sub.size(-1)), dim=-1)  # descending
            probs = (values - torch.logsumexp(sub, dim=-1, keepdim=True)).exp()
            before = probs.cumsum(-1) - probs  # mass of the tokens ranked above each one
            keep = before < p
            keep[..., : self.min_tokens_to_keep] = True
            covered = (before[..., -1] + probs[..., -1]) >= p.squeeze(-1)  # the nucleus ends inside the top 256
            out = torch.full_like(sub, self.filter_value).scatter(-1, index, values.masked_fill(~keep, self.filter_value))
            if not bool(covered.all()):
                wide = (~covered).nonzero().squeeze(-1)
                out[wide] = super().__call__(sub[wide], tensor_arg[rows[wide]].view(dtype=torch.int32))
            scores = scores.clone()
            scores[rows] = out
            return scores

    cbl.CLASSIC_TO_CB_PROCESSORS_MAP[TopPLogitsWarper] = FastTopP
    return True


def parse_request(body: Any, default_max_tokens: int) -> tuple[list[dict[str, Any]], Sampling, dict[str, Any]]:
    """(messages, sampling, chat template kwargs) of a chat-completions body, or BadRequest naming the field."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise BadRequest("'messages' must be a non-empty list of {role, content} objects")
    messages = [{**m, "content": message_text(m, i)} for i, m in enumerate(messages)]
    for key, what in REFUSED.items():
        if key in body and body[key] not in (None, DEFAULTS_OFF.get(key, None)):
            raise BadRequest(f"'{key}': this server does not support {what}")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    max_tokens = default_max_tokens if max_tokens is None else max_tokens
    temperature = 1.0 if body.get("temperature") is None else body["temperature"]
    top_p = 1.0 if body.get("top_p") is None else body["top_p"]
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise BadRequest(f"'max_tokens' must be a positive integer, not {max_tokens!r}")
    if not isinstance(temperature, (int, float)) or temperature < 0:
        raise BadRequest(f"'temperature' must be a number >= 0, not {temperature!r}")
    if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise BadRequest(f"'top_p' must be in (0, 1], not {top_p!r}")
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise BadRequest("'stop' must be a string or a list of non-empty strings")
    kwargs = body.get("chat_template_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise BadRequest("'chat_template_kwargs' must be an object")
    return messages, Sampling(max_tokens, float(temperature), float(top_p), stop), kwargs


def message_text(message: dict[str, Any], index: int) -> str:
    """A message's content as the one string the chat template renders, from every shape the OpenAI API accepts for
    text: a string, a list of text parts (joined by newlines, as vLLM joins them), or null/absent on an assistant
    turn that makes tool calls. Other parts (images, audio) are a BadRequest naming the field."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if content is None and message["role"] == "assistant":
        return ""
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind != "text" or not isinstance(part.get("text"), str):
                raise BadRequest(f"'messages[{index}].content[{j}]': only text parts ({{\"type\": \"text\", \"text\": ...}}) are "
                                 f"supported, not {kind or type(part).__name__!r}")
            texts.append(part["text"])
        return "\n".join(texts)
    raise BadRequest(f"'messages[{index}].content' must be a string or a list of text parts"
                     f"{'' if message['role'] == 'assistant' else ' (null only on an assistant turn)'}, not {content!r}")


def first_stop(text: str, stops: list[str]) -> Optional[int]:
    """Where the earliest stop string starts in `text`, or None."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def install_per_request_attention() -> bool:
    """Make the engine's SDPA attention work request by request. On a CPU (no flash-attention varlen kernel)
    the engine packs every request in flight into one sequence and masks the cross-request blocks, so each
    token attends over the keys of *all* requests: 8 agents with 2,000-token contexts cost 8x the attention
    of each alone, and 4 concurrent long prompts took longer than running them one after another. Slicing
    the same mask per request gives the same result for a fraction of the work; a request decoding one token
    sees all its own keys, so it needs no mask at all (the mask-free kernel is the fast one). Calls torch's
    SDPA directly with grouped-query heads (no copied key/value heads). False when this transformers passes
    attention differently (the stock function stays)."""
    try:
        import torch
        from transformers.integrations.sdpa_attention import sdpa_attention_forward
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    except ImportError:
        return False
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def per_request_sdpa(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, scaling: Optional[float] = None, **kwargs: Any) -> Any:
        decoding = kwargs.get("webdancer_decode")  # a decode-only step whose keys DecodeKV holds (decode_kv.py)
        if decoding is not None:
            return attend(query, *decoding, query.shape[-1] ** -0.5 if scaling is None else scaling), None
        cu_q, cu_k = kwargs.get("cu_seq_lens_q"), kwargs.get("cu_seq_lens_k")
        if isinstance(cu_k, dict) and len(cu_k) == 1:
            cu_k = next(iter(cu_k.values()))
        packed = (torch.is_tensor(cu_q) and torch.is_tensor(cu_k) and query.shape[0] == 1 and cu_q.numel() > 2 and torch.is_tensor(attention_mask)
                  and int(cu_q[-1]) == query.shape[2] and int(cu_k[-1]) == key.shape[2] and not kwargs.get("dropout"))
        if not packed:
            return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
        gqa = key.shape[1] != query.shape[1]
        bounds_q, bounds_k = cu_q.tolist(), cu_k.tolist()
        parts = [
            sdpa(query[:, :, q0:q1], key[:, :, k0:k1], value[:, :, k0:k1], scale=scaling, enable_gqa=gqa,
                 attn_mask=None if q1 - q0 == 1 else attention_mask[..., q0:q1, k0:k1])
            for q0, q1, k0, k1 in zip(bounds_q, bounds_q[1:], bounds_k, bounds_k[1:])
        ]
        return torch.cat(parts, dim=2).transpose(1, 2), None

    ALL_ATTENTION_FUNCTIONS["sdpa"] = per_request_sdpa
    return True


def install_lean_sampling() -> bool:
    """Two fixes to the engine's step on a CPU, same results:
    - it runs the LM head on every token of a prefill chunk (512 rows of a 49,152-word vocabulary, ~29 GFLOP)
      and then keeps one row per request; passing `logits_to_keep` computes only the rows it keeps;
    - `torch.multinomial` draws one exponential per vocabulary entry (6 ms for 8 rows on two cores, more than
      a decode step's attention); inverse-CDF sampling (one uniform per row, a binary search in the cumulative
      probabilities) draws from exactly the same distribution, from the same seeded generator.
    False when this transformers lays the engine out differently (the stock step stays)."""
    import torch

    runner = step_runner()
    if runner is None or not hasattr(runner, "_sample"):
        return False
    if getattr(runner, "webdancer_lean", False):
        return True
    stock_sample, stock_step = runner._sample, runner._forward_process_and_sample

    def sample(self: Any, scores: "torch.Tensor", output_ids: "torch.Tensor") -> None:
        if self.return_logprobs or not self.do_sample:
            return stock_sample(self, scores, output_ids)
        probs = torch.softmax(scores[0], dim=-1)
        cdf = probs.cumsum(-1, dtype=torch.float64)
        draw = torch.rand(cdf.size(0), 1, dtype=torch.float64) * cdf[:, -1:]
        tokens = torch.searchsorted(cdf, draw, right=True).squeeze(-1)
        tokens = torch.where(tokens < cdf.size(-1), tokens, probs.argmax(-1))  # a draw rounded up to the total
        output_ids[0, : tokens.size(0)].copy_(tokens)

    def step(self: Any, model: Any, batch_data: Any, *args: Any, **kwargs: Any) -> Any:
        if "logits_to_keep" not in batch_data and "logits_indices" in batch_data:
            batch_data = {**batch_data, "logits_to_keep": batch_data["logits_indices"]}
        return stock_step(self, model, batch_data, *args, **kwargs)

    runner._sample, runner._forward_process_and_sample, runner.webdancer_lean = sample, step, True
    return True


SMALL_STEP_TOKENS = 64  # a step with at most this many query tokens is decoding (no prefill chunk to speak of)


class DecodeThreads:
    """How many torch threads a decode step runs on, chosen by timing real decode steps.

    Which is faster depends on the CPU: a decode step of a small model is memory-bound matmuls between many small
    Python-level ops, and on a 2-core AMD EPYC its second OpenMP thread mostly spun between them, competing with the
    server's own thread (one thread: 1.3-1.4x the tokens/s, 2026-11-28), while on a 2-core Xeon two threads gave up
    to 1.4x (same day). So each candidate runs on alternate decode steps (similar batches) until each has `trial`
    steps, the one with the lower median step time is kept, and after `settle` more decode steps the trial runs
    again (a shared machine's neighbours come and go). One candidate (a pinned --decode-threads) is never tried."""

    def __init__(self, candidates: list[int], trial: int = 16, settle: int = 2000):
        self.candidates = sorted(set(candidates))
        self.trial, self.settle = trial, settle
        self.chosen: Optional[int] = self.candidates[0] if len(self.candidates) == 1 else None
        self.times: dict[int, list[float]] = {c: [] for c in self.candidates}
        self.steps_since_choice = 0

    def next(self) -> int:
        if self.chosen is not None:
            return self.chosen
        return min(self.candidates, key=lambda c: len(self.times[c]))  # the one with the fewest timed steps: they alternate

    def record(self, threads: int, seconds: float) -> None:
        if self.chosen is not None:
            self.steps_since_choice += 1
            if len(self.candidates) > 1 and self.steps_since_choice >= self.settle:
                self.chosen, self.times = None, {c: [] for c in self.candidates}
            return
        self.times[threads].append(seconds)
        if all(len(t) >= self.trial for t in self.times.values()):
            medians = {c: sorted(t)[len(t) // 2] for c, t in self.times.items()}
            self.chosen, self.steps_since_choice = min(medians, key=medians.__getitem__), 0
            log.info("decode steps run on %d thread(s): median step %s", self.chosen,
                     ", ".join(f"{1000 * m:.1f} ms on {c}" for c, m in sorted(medians.items())))


def decode_thread_candidates(decode_threads: int, full: int) -> list[int]:
    """A pinned count (`decode_threads` > 0, at most `full`), else all cores and all but one (the server's)."""
    if decode_threads > 0:
        return [min(decode_threads, full)]
    return sorted({max(1, full - 1), full})


def install_step_threads(threads: DecodeThreads) -> bool:
    """Run decoding steps on the thread count `threads` picks (and time them for it), steps with prefill
    (compute-bound) on all threads. False when this transformers lays out its step differently."""
    import torch

    runner = step_runner()
    if runner is None:
        return False
    inner = getattr(runner, "webdancer_unthreaded_step", runner._forward_process_and_sample)
    full = torch.get_num_threads()

    def step(self: Any, model: Any, batch_data: Any, *args: Any, **kwargs: Any) -> Any:
        tokens = batch_data["input_ids"].shape[-1] if "input_ids" in batch_data else SMALL_STEP_TOKENS + 1
        decoding = tokens <= SMALL_STEP_TOKENS
        want = threads.next() if decoding else full
        if torch.get_num_threads() != want:
            torch.set_num_threads(want)
        if not decoding:
            return inner(self, model, batch_data, *args, **kwargs)
        start = time.perf_counter()
        result = inner(self, model, batch_data, *args, **kwargs)
        threads.record(want, time.perf_counter() - start)
        return result

    runner.webdancer_unthreaded_step, runner._forward_process_and_sample = inner, step
    return True


def check_linear_dtype(linear_dtype: str) -> None:
    if linear_dtype == "bfloat16" and not bf16_supported():
        raise SystemExit("--linear-dtype bfloat16: this CPU has no native bf16 matmuls (AVX512-BF16 or AMX) or this torch has no oneDNN, "
                         "so bf16 would be slower than fp32; serve with serve.linear_dtype=float32")


def end_of_turn_ids(model: Any, tokenizer: Any) -> list[int]:
    """The model's EOS ids plus the chat template's end of turn (`<|im_end|>`) where the tokenizer has it."""
    eos = model.generation_config.eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(end, int) and end != tokenizer.unk_token_id and end not in eos:
        eos.append(end)
    return eos or [tokenizer.eos_token_id]


def pack_linear_weights(model: Any, dtype: str = "float32") -> int:
    """Give every linear layer oneDNN's prepacked copy of its weight. torch's default fp32 GEMM (MKL) runs a
    decode step's small matrices (8 rows) at a fraction of memory bandwidth on this kind of CPU; the prepacked
    kernel reads the weights at close to it (lm head, 8 rows: 8.9 -> 2.5 ms). Costs a second copy of the
    weights (~540 MB fp32 for SmolLM2-135M).
    dtype float32: same arithmetic, a different summation order (last-bit differences). bfloat16: the packed
    weights and each layer's input are bf16 (accumulated in fp32, output back in fp32; norms, attention and
    the residual stream stay fp32): half the bytes a decode step reads, which is what bounds it (1.25-1.45x the
    tokens/s on two cores), at the cost of bf16 rounding (greedy replies can differ from fp32 after some tokens).
    Layers marked `webdancer_fused` (q/k/v and gate/up, packed stacked by `lean_llama`) are left to it.
    Returns how many layers were packed; 0 when this torch has no oneDNN (the stock path stays)."""
    import torch

    check_dtype(dtype)  # also where there is no oneDNN to pack with
    if not onednn():
        return 0
    packed = 0
    for layer in model.modules():
        if isinstance(layer, torch.nn.Linear) and layer.weight.dtype == torch.float32 and not getattr(layer, "webdancer_fused", False):
            layer.forward = CpuLinear([layer.weight.detach()], None if layer.bias is None else layer.bias.detach(), dtype)
            packed += 1
    return packed


class BatchedGenerator:
    """Owns a model and the continuous batching engine on it; `generate` is called from an event loop (the server's,
    or the TRL engine's rollout loop, which runs it on a copy of the policy: `webdancer_rl.batched_turns`).
    The engine changes the model it is given (packed and stacked weight copies, its attention implementation), so
    a model that is also trained must not be handed over itself."""

    def __init__(self, model: Any, tokenizer: Any, max_batch_tokens: int, num_blocks: int, block_size: int, seed: Optional[int],
                 threads: int = 0, decode_threads: int = 0, linear_dtype: str = "float32", eos: Optional[list[int]] = None):
        import torch
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        check_linear_dtype(linear_dtype)
        if threads:
            torch.set_num_threads(threads)
        self.tokenizer, self.model = tokenizer, model.eval()
        if not hasattr(self.model, "init_continuous_batching"):
            import transformers

            raise SystemExit(f"transformers {transformers.__version__} has no continuous batching: pip install 'transformers>=5.0', "
                             "or set serve.backend=transformers (one request at a time)")
        self.eos = list(eos) if eos else end_of_turn_ids(model, tokenizer)
        if not install_per_request_attention():
            log.warning("this transformers has no SDPA attention to split per request; concurrent long prompts will be slow")
        elif not install_decode_kv():
            log.warning("this transformers lays out its paged cache differently; decode steps gather every request's keys at every layer (slower)")
        if not install_fast_top_p():
            log.warning("this transformers has no per-request top-p hook to speed up; using its own (slower) top-p")
        if not install_lean_sampling():
            log.warning("this transformers lays out its batching step differently; using its own (slower) sampling")
        if os.environ.get("WEBDANCER_LEAN_LLAMA", "1") == "1":
            install_lean_llama(self.model, linear_dtype)
        if not pack_linear_weights(self.model, linear_dtype):
            if linear_dtype != "float32":
                raise SystemExit(f"--linear-dtype {linear_dtype}: this torch has no oneDNN prepacked linear layers; serve with serve.linear_dtype=float32")
            log.warning("this torch has no oneDNN prepacked linear layers; using its default GEMM (slower)")
        elif (small := choose_small_input_kernel(model_linears(self.model))) is not None:
            log.info("a request decoding alone runs through %s (the model's linear layers at one row: GEMV %.1f ms, packed %.1f ms)", *small)
        if not install_step_threads(DecodeThreads(decode_thread_candidates(decode_threads, torch.get_num_threads()))):
            log.warning("this transformers lays out its batching step differently; decoding on all threads")
        # Every per-request processor must exist when the engine starts (values here are only defaults).
        gen = GenerationConfig(do_sample=True, temperature=0.5, top_k=None, top_p=0.99, max_new_tokens=256, eos_token_id=self.eos,
                               pad_token_id=self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos[0])
        cb = ContinuousBatchingConfig(page_size=block_size, num_blocks=num_blocks, max_batch_tokens=max_batch_tokens,
                                      per_request_processors=True, seed=seed, allow_block_sharing=True)
        self.max_tokens_in_cache = num_blocks * block_size
        self.in_flight = 0  # requests the engine is generating for (shown by /health)
        self.manager = self.model.init_continuous_batching(generation_config=gen, continuous_batching_config=cb)
        self.manager.start()
        # Every step runs on the engine's thread from here on; this thread's OpenMP pool (left by loading and packing)
        # would make libgomp put the engine's workers to sleep after each of a step's hundreds of regions (openmp.py).
        release_thread_pool()

    @classmethod
    def from_dir(cls, model_dir: Path, *args: Any, linear_dtype: str = "float32", **kwargs: Any) -> "BatchedGenerator":
        """The engine on the model and tokenizer of a Hugging Face folder (float32; what the server serves)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        check_linear_dtype(linear_dtype)  # before minutes of loading
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32)
        return cls(model, tokenizer, *args, linear_dtype=linear_dtype, **kwargs)

    def prompt_ids(self, messages: list[dict[str, Any]], template_kwargs: dict[str, Any]) -> list[int]:
        try:
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, **template_kwargs)
        except Exception as exc:  # a template error is the request's fault (a role the template refuses ...)
            raise BadRequest(f"the chat template could not render these messages: {exc}") from None
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)

    def alive_error(self) -> Optional[str]:
        error = self.manager.background_thread_status.fatal_error
        return None if error is None else str(error)

    async def generate(self, prompt: list[int], sampling: Sampling) -> tuple[str, list[int], str]:
        """(text, generated token ids, finish reason). Stop strings cancel the request in the engine as soon
        as they appear, so no compute is spent past them."""
        if len(prompt) + sampling.max_new_tokens > self.max_tokens_in_cache:
            raise BadRequest(f"prompt ({len(prompt)} tokens) + max_tokens ({sampling.max_new_tokens}) exceed the KV cache of "
                             f"{self.max_tokens_in_cache} tokens (start the server with a larger --kv-cache-tokens)")
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()
        request_id = f"req-{uuid.uuid4().hex}"
        window = max((len(s) for s in sampling.stop), default=0) + 2  # tokens that can hold any stop string (>= 1 char each)
        scanned = [0]

        def on_output(output: Any) -> None:
            if done.done():
                return
            if output.error is not None:
                done.set_exception(RuntimeError(output.error))
                return
            tokens = list(output.generated_tokens)
            if sampling.stop and len(tokens) > scanned[0]:
                tail = self.tokenizer.decode(tokens[max(0, scanned[0] - window):], skip_special_tokens=True)
                scanned[0] = len(tokens)
                if first_stop(tail, sampling.stop) is not None:
                    text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                    cut = first_stop(text, sampling.stop)
                    self._forget(request_id, cancel=not output.is_finished())
                    done.set_result((text[:cut], tokens, "stop"))
                    return
            if output.is_finished():
                reason = "length" if len(tokens) >= sampling.max_new_tokens and (not tokens or tokens[-1] not in self.eos) else "stop"
                done.set_result((self.tokenizer.decode(tokens, skip_special_tokens=True), tokens, reason))

        self.manager.register_result_handler(request_id, on_output)
        self.manager.add_request(prompt, request_id=request_id, max_new_tokens=sampling.max_new_tokens, streaming=bool(sampling.stop),
                                 eos_token_id=self.eos, **sampling.processor_kwargs)
        self.in_flight += 1
        try:
            return await done
        except asyncio.CancelledError:  # the client went away: free its slot in the batch
            self._forget(request_id, cancel=True)
            raise
        finally:
            self.in_flight -= 1

    def _forget(self, request_id: str, cancel: bool) -> None:
        if cancel:
            self.manager.cancel_request(request_id)
        router = self.manager.output_router  # a cancelled request gets no final output that would drop its handler
        with router._lock:
            router.result_handlers.pop(request_id, None)

    def decode_kv(self) -> Optional[DecodeKV]:
        """The running engine's kept keys (their counters say how often decode steps appended or re-gathered)."""
        cache = getattr(getattr(self.manager, "batch_processor", None), "cache", None)
        return None if cache is None else decode_kv_of(cache)

    def stop(self) -> None:
        if (kept := self.decode_kv()) is not None:
            log.info("decode steps: %d appended to the kept keys, %d gathered them from the pages", kept.appends, kept.regathers)
        self.manager.stop(block=True, timeout=5)


class ClientGone(Exception):
    """The client of a request closed its connection before the reply."""


async def until_disconnected(request: Any, work: Any, poll_s: float = 0.25) -> Any:
    """Await `work` unless the client disconnects first: then cancel it (the engine drops the request and frees its
    slot) and raise ClientGone. Starlette does not cancel a handler whose client has gone, so without this a dropped
    1,500-token request kept a CPU busy for minutes."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll_s)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                raise ClientGone()
    finally:
        if not task.done():  # this handler itself was cancelled (the server is stopping)
            task.cancel()


def completion_events(head: dict[str, Any], text: str, reason: str, usage: dict[str, int], options: Any,
                      ids: Optional[dict[str, list[int]]] = None) -> Iterator[str]:
    """A finished completion in the OpenAI stream format (`stream: true`), for clients that only read streams
    (verifiers' harness programs): the whole text in one chunk, then the finish reason, the usage when
    `stream_options.include_usage` asks for it, then [DONE]. The text arrives in one piece when the completion is
    done (no token-by-token delivery: stop strings are cut from the whole text, and the clients that ask for a
    stream here read it whole). Token ids, when asked for, go as vLLM sends them: the prompt's in the first chunk,
    the completion's beside its text."""
    chunk = {**head, "object": "chat.completion.chunk"}
    first = {"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}
    if ids:
        first["token_ids"] = ids["token_ids"]
    yield f"data: {json.dumps({**chunk, **({'prompt_token_ids': ids['prompt_token_ids']} if ids else {}), 'choices': [first]})}\n\n"
    yield f"data: {json.dumps({**chunk, 'choices': [{'index': 0, 'delta': {}, 'finish_reason': reason}]})}\n\n"
    if isinstance(options, dict) and options.get("include_usage"):
        yield f"data: {json.dumps({**chunk, 'choices': [], 'usage': usage})}\n\n"
    yield "data: [DONE]\n\n"


def build_app(generator: BatchedGenerator, served_names: set[str], default_max_tokens: int) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    created = int(time.time())
    name = sorted(served_names)[0]
    folders = {Path(n).resolve() for n in served_names if Path(n).is_dir()}

    def serves(model: Any) -> bool:
        """The served name, or the model folder written any way (relative, absolute)."""
        return model is None or model in served_names or (isinstance(model, str) and Path(model).resolve() in folders)

    def error(status: int, message: str, kind: str) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)

    async def health(_: Request) -> JSONResponse:
        problem = generator.alive_error()
        if problem:
            return error(503, f"the generation engine stopped: {problem}", "server_error")
        return JSONResponse({"status": "ok", "requests_in_flight": generator.in_flight})

    async def models(_: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": n, "object": "model", "created": created, "owned_by": "webdancer"} for n in sorted(served_names)]})

    async def chat(request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return error(400, "the body is not JSON", "invalid_request_error")
        if isinstance(body, dict) and not serves(body.get("model")):
            return error(404, f"model {body.get('model')!r} is not served here; this server serves {name!r}", "invalid_request_error")
        if (problem := generator.alive_error()) is not None:
            return error(503, f"the generation engine stopped: {problem}", "server_error")
        try:
            messages, sampling, template_kwargs = parse_request(body, default_max_tokens)
            prompt = generator.prompt_ids(messages, template_kwargs)
            text, tokens, reason = await until_disconnected(request, generator.generate(prompt, sampling))
        except ClientGone:
            return error(499, "the client closed the connection; its generation was cancelled", "client_closed_request")
        except BadRequest as exc:
            return error(400, str(exc), "invalid_request_error")
        except RuntimeError as exc:
            return error(503 if generator.alive_error() else 500, f"generation failed: {exc}", "server_error")
        head = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": body.get("model") or name}
        usage = {"prompt_tokens": len(prompt), "completion_tokens": len(tokens), "total_tokens": len(prompt) + len(tokens)}
        ids = {"prompt_token_ids": prompt, "token_ids": tokens} if body.get("return_token_ids") else {}  # vLLM's extension
        if body.get("stream"):
            return StreamingResponse(completion_events(head, text, reason, usage, body.get("stream_options"), ids), media_type="text/event-stream")
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason}
        if ids:
            head["prompt_token_ids"], choice["token_ids"] = ids["prompt_token_ids"], ids["token_ids"]
        return JSONResponse({**head, "object": "chat.completion", "choices": [choice], "usage": usage})

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        yield
        generator.stop()

    return Starlette(routes=[
        Route("/health", health), Route("/v1/models", models), Route("/v1/chat/completions", chat, methods=["POST"]),
    ], lifespan=lifespan)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m webdancer_models.batched_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, help="a Hugging Face model folder (webdancer model export ...)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name", default="", help="the `model` clients send (the folder path is always accepted)")
    parser.add_argument("--max-batch-tokens", type=int, default=512, help="tokens in one forward pass (prefill chunks + one per decoding request)")
    parser.add_argument("--kv-cache-tokens", type=int, default=32768, help="KV cache shared by all requests in flight, in tokens (46 KB each for SmolLM2-135M; decode steps keep a copy of the batch's keys of up to this size)")
    parser.add_argument("--block-size", type=int, default=64, help="tokens per KV cache block")
    parser.add_argument("--default-max-tokens", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--decode-threads", type=int, default=0, help="torch threads of steps that only decode (0: chosen by timing decode steps on all cores and on all but one)")
    parser.add_argument("--linear-dtype", choices=LINEAR_DTYPES, default="float32",
                        help="dtype of the linear layers' packed weights and inputs (bfloat16: half the bytes per step, on CPUs with native bf16)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the engine's sampler (the whole server, not one request)")
    args = parser.parse_args(argv)
    if not (args.model_dir / "config.json").is_file():
        parser.error(f"{args.model_dir} is not a Hugging Face model folder (no config.json)")
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    generator = BatchedGenerator.from_dir(args.model_dir, args.max_batch_tokens, -(-args.kv_cache_tokens // args.block_size), args.block_size, args.seed, args.threads,
                                           args.decode_threads, linear_dtype=args.linear_dtype)
    names = {str(args.model_dir), args.served_model_name} - {""}
    log.info("serving %s on http://%s:%d/v1 (continuous batching, KV cache %d tokens, %s linear layers)", args.model_dir, args.host, args.port,
             generator.max_tokens_in_cache, args.linear_dtype)
    # A stop (SIGTERM, SIGINT) waits at most 2 s for requests in flight: uvicorn would otherwise wait for every one to
    # finish generating, minutes for long replies, while the pipeline that stopped it waits to start the next server.
    uvicorn.run(build_app(generator, names, args.default_max_tokens), host=args.host, port=args.port, log_level="warning",
                timeout_graceful_shutdown=2)


if __name__ == "__main__":
    main()
