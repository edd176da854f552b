"""The model server's config section (`serve`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar


@dataclass
class ServeConfig:
    """How `webdancer serve` starts a model server (or where an external one is)."""

    name: ClassVar[str] = "serve"  # the config section it is read from

    # batched: our CPU server over transformers' continuous batching (concurrent requests share each decode
    # step); transformers: `transformers serve`, one request at a time (per-request seeds); sglang:
    # `python -m sglang.launch_server` on GPU; vllm: vLLM's OpenAI server (its own environment,
    # scripts/setup_vllm.sh; CPU or GPU); external: an OpenAI-compatible server someone else runs.
    backend: str = "batched"
    model_path: str = ".webdancer/models/smollm2-135m"  # a Hugging Face model folder
    host: str = "127.0.0.1"
    port: int = 8000
    external_url: str = ""  # backend external: its OpenAI-compatible base URL
    served_model_name: str = ""  # sglang, vllm: the name clients send (default: the model path)
    tensor_parallel: int = 1  # sglang --tp, vllm --tensor-parallel-size
    context_length: int = 8192  # sglang --context-length, vllm --max-model-len
    mem_fraction_static: float = 0.85  # sglang --mem-fraction-static, vllm --gpu-memory-utilization
    health_timeout_s: float = 300.0  # how long to wait for the server to become healthy
    kv_cache_tokens: int = 32768  # batched, vllm on the CPU (VLLM_CPU_KVCACHE_SPACE): KV cache shared by the requests in flight (46 KB a token for the tiny model; decoding keeps up to as much again)
    max_batch_tokens: int = 512  # batched: tokens in one forward pass (prefill chunks + one per decoding request)
    # batched: dtype of the linear layers' weights and inputs. float32: exact (greedy replies are what in-process
    # generate gives); bfloat16: half the bytes a decode step reads (1.25-1.45x tokens/s on a CPU with native bf16
    # matmuls, AVX512-BF16 or AMX), with bf16 rounding (greedy replies can part from fp32 after some tokens).
    linear_dtype: str = "float32"
    # vllm --dtype; empty: float32 with vLLM's CPU build (greedy replies as the fp32 policy's; bf16 parts from them
    # after some tokens), vLLM's own `auto` on a GPU.
    dtype: str = ""
    extra_args: list[str] = field(default_factory=list)  # appended to the server command
    # The environment sglang or vllm runs from; empty: the backend's own, .venvs/serve (scripts/setup_serve.sh) for
    # sglang, .venvs/vllm (scripts/setup_vllm.sh) for vllm.
    venv: str = ""
