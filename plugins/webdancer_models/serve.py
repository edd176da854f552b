"""Model servers as child processes: build the command, wait for health, show the log when it dies."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Optional

import httpx

from webdancer.errors import WebdancerError
from webdancer.launch import die_with_parent, run_preflight, venv_bin, venv_env
from webdancer_models.config import ServeConfig
from webdancer_models.cpu_linear import LINEAR_DTYPES
from webdancer_models.vllm_serve import vllm_check, vllm_command, vllm_env

log = logging.getLogger("webdancer.serve")


def transformers_command(cfg: ServeConfig) -> list[str]:
    """The maintained `transformers serve` OpenAI server, pinned to one model folder, on the CPU."""
    return [
        sys.executable, "-m", "transformers.cli.transformers", "serve", cfg.model_path,
        "--host", cfg.host, "--port", str(cfg.port), "--device", "cpu", *cfg.extra_args,
    ]


def batched_command(cfg: ServeConfig) -> list[str]:
    """Our continuous-batching CPU server (webdancer_models.batched_server) on one model folder."""
    cmd = [
        sys.executable, "-m", "webdancer_models.batched_server", cfg.model_path, "--host", cfg.host, "--port", str(cfg.port),
        "--kv-cache-tokens", str(cfg.kv_cache_tokens), "--max-batch-tokens", str(cfg.max_batch_tokens), "--linear-dtype", cfg.linear_dtype,
    ]
    if cfg.served_model_name:
        cmd += ["--served-model-name", cfg.served_model_name]
    return cmd + list(cfg.extra_args)


def check_linear_dtype(cfg: ServeConfig) -> None:
    """serve.linear_dtype is one the batched server knows, and other backends are left at float32 (they would ignore it)."""
    if cfg.linear_dtype not in LINEAR_DTYPES:
        raise WebdancerError(f"serve.linear_dtype '{cfg.linear_dtype}' is not one of {', '.join(LINEAR_DTYPES)}")
    if cfg.linear_dtype != "float32" and cfg.backend != "batched":
        raise WebdancerError(f"serve.linear_dtype={cfg.linear_dtype} is for serve.backend=batched, not {cfg.backend}; set it back to float32 "
                             "(sglang takes its own --dtype in serve.extra_args)")


LOCAL_BACKENDS = {"batched": batched_command, "transformers": transformers_command, "vllm": vllm_command}  # servers of a local model folder
SGLANG_VENV = ".venvs/serve"


def server_command(cfg: ServeConfig) -> list[str]:
    """The command that starts `cfg.backend` (not `external`, which webdancer does not start)."""
    check_linear_dtype(cfg)
    if cfg.backend == "sglang":
        return sglang_command(cfg)
    if cfg.backend in LOCAL_BACKENDS:
        return LOCAL_BACKENDS[cfg.backend](cfg)
    raise WebdancerError(f"serve.backend '{cfg.backend}' is not one of {', '.join([*LOCAL_BACKENDS, 'sglang', 'external'])}")


def server_env(cfg: ServeConfig) -> Optional[dict[str, str]]:
    """What the backend's process needs in its environment beyond ours (its own environment first on PATH)."""
    return {"sglang": sglang_env, "vllm": vllm_env}.get(cfg.backend, lambda _: None)(cfg)


def check_server(cfg: ServeConfig) -> Optional[dict]:
    """The backend's own checks on its command, where it has them (SGLang's and vLLM's parsers); None for the rest."""
    return {"sglang": sglang_check, "vllm": vllm_check}.get(cfg.backend, lambda _: None)(cfg)


def sglang_command(cfg: ServeConfig) -> list[str]:
    """What the reference deploy script runs: `python -m sglang.launch_server` with TP, port, name, length, memory, from
    the serving environment (serve.venv), which has SGLang; the core environment does not."""
    cmd = [
        str(venv_bin(Path(cfg.venv or SGLANG_VENV)) / "python"), "-m", "sglang.launch_server",
        "--model-path", cfg.model_path,
        "--host", cfg.host,
        "--port", str(cfg.port),
        "--tp", str(cfg.tensor_parallel),
        "--context-length", str(cfg.context_length),
        "--mem-fraction-static", str(cfg.mem_fraction_static),
    ]
    if cfg.served_model_name:
        cmd += ["--served-model-name", cfg.served_model_name]
    return cmd + list(cfg.extra_args)


def sglang_env(cfg: ServeConfig) -> dict[str, str]:
    """The serving environment (serve.venv) first on PATH, once it is there: else an error saying how to make it."""
    venv = Path(cfg.venv or SGLANG_VENV)
    if not (venv_bin(venv) / "python").is_file():
        raise WebdancerError(f"{venv_bin(venv) / 'python'} not found: run `bash scripts/setup_serve.sh` (WEBDANCER_SERVE_GPU=1 on a GPU node) or set serve.venv")
    return venv_env(venv)


def sglang_check(cfg: ServeConfig) -> dict:
    """SGLang's own parser on the sglang command (webdancer_models/sglang_preflight.py, in serve.venv); a refusal is an error."""
    command, env = sglang_command(cfg), sglang_env(cfg)
    return run_preflight([command[0], str(Path(__file__).with_name("sglang_preflight.py")), *command[3:]],
                         {**os.environ, **env}, "SGLang refuses", "(serve.extra_args or the serve section)")


def served_model_name(cfg: ServeConfig) -> str:
    """The `model` value clients must send: transformers serve pins the path it was given."""
    if cfg.backend == "transformers":
        return cfg.model_path
    return cfg.served_model_name or cfg.model_path


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _group_alive(group: int) -> bool:
    """Whether a process of process group `group` still runs (a zombie waiting to be reaped does not)."""
    import psutil

    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == group and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, PermissionError):
            continue
    return False


class ServerProcess:
    """A model server child process in its own process group, logging to a file."""

    def __init__(self, command: list[str], base_url: str, log_file: Path, env: Optional[dict[str, str]] = None):
        self.command = command
        self.base_url = base_url.rstrip("/")
        self.log_file = log_file
        self.env = env
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout_s: float) -> "ServerProcess":
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_file.open("wb")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(self.env or {})}
        try:
            self.proc = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, preexec_fn=die_with_parent
            )
        except FileNotFoundError as exc:
            raise WebdancerError(f"cannot start the model server: {exc}") from None
        finally:
            log.close()
        try:
            self.wait_healthy(timeout_s)
        except BaseException:  # interrupted (Ctrl-C, SIGTERM) or failed before it was ready: the child goes too
            self.stop()
            raise
        return self

    def tail(self, lines: int = 15) -> str:
        try:
            with self.log_file.open("r", encoding="utf-8", errors="replace") as fh:
                return "".join(deque(fh, maxlen=lines))
        except OSError:
            return ""

    def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise WebdancerError(
                    f"the model server exited with code {self.proc.returncode} before it was ready; last log lines "
                    f"({self.log_file}):\n{self.tail()}"
                )
            if is_healthy(self.base_url):
                return
            time.sleep(0.5)
        self.stop()
        raise WebdancerError(f"the model server was not healthy after {timeout_s:g} s; last log lines ({self.log_file}):\n{self.tail()}")

    def stop(self) -> None:
        """SIGTERM to the server's process group; returns once every process of the group is gone (SIGKILL after 15 s)."""
        if self.proc is None:
            return
        group = self.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while _group_alive(group) and time.monotonic() < deadline:  # the server's own workers exit after it
            if self.proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=0.05)
            else:
                time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        self.proc.wait()

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def is_healthy(base_url: str) -> bool:
    """`/health` (transformers serve, SGLang) or `/v1/models` (any OpenAI-compatible server)."""
    root = base_url.rstrip("/").removesuffix("/v1")
    for url in (f"{root}/health", f"{root}/v1/models"):
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return True
        except httpx.HTTPError:
            continue
    return False


def start_server(cfg: ServeConfig, log_dir: Path) -> ServerProcess:
    """Start (or, for `external`, check) the configured server; errors say what to do."""
    base_url = f"http://{cfg.host}:{cfg.port}/v1"
    if cfg.backend == "external":
        check_linear_dtype(cfg)  # the other backends are checked by server_command
        if not cfg.external_url:
            raise WebdancerError("serve.backend=external needs serve.external_url (an OpenAI-compatible base URL)")
        server = ServerProcess([], cfg.external_url, log_dir / "external.log")
        if not is_healthy(cfg.external_url):
            raise WebdancerError(f"no healthy OpenAI-compatible server at {cfg.external_url}")
        return server
    if port_in_use(cfg.host, cfg.port):
        raise WebdancerError(f"port {cfg.port} on {cfg.host} is already in use; stop that server or set serve.port")
    command = server_command(cfg)
    if cfg.backend in LOCAL_BACKENDS and not (Path(cfg.model_path) / "config.json").is_file():
        raise WebdancerError(f"{cfg.model_path} is not a Hugging Face model folder; run `webdancer model export smollm2-135m {cfg.model_path}`")
    if cfg.backend == "transformers":
        from webdancer_models.export import sample_when_asked

        if sample_when_asked(Path(cfg.model_path)):
            log.info("%s/generation_config.json: do_sample=true so that request temperatures apply (0 stays greedy)", cfg.model_path)
    return ServerProcess(command, base_url, log_dir / f"{cfg.backend}-{cfg.port}.log", server_env(cfg)).start(cfg.health_timeout_s)
