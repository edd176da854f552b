"""Running a trainer's native command as a child process: the command recorded, its log streamed and kept."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from webdancer.jsonl import atomic_write_text


def write_command_script(path: Path, command: list[str], note: str, env: Optional[dict[str, str]] = None,
                         venv: Optional[Path] = None, lines: Sequence[str] = ()) -> None:
    """`command.sh` beside the outputs, so a person can rerun exactly this by hand or on a cluster: `env` exported,
    `venv`'s bin first on PATH (as `venv_env` gives the launched process), then `lines` (raw shell) and the command."""
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in (env or {}).items())
    if venv is not None:
        exports += f'export PATH={shlex.quote(str(venv_bin(venv)))}:"$PATH"\n'
    raw = "".join(f"{line}\n" for line in lines)
    atomic_write_text(path, f"#!/usr/bin/env bash\n# {note}\n{exports}{raw}{shlex.join(command)}\n")
    path.chmod(0o755)


def venv_bin(venv: Path) -> Path:
    return Path(venv).absolute() / "bin"


def venv_env(venv: Path) -> dict[str, str]:
    """PATH and VIRTUAL_ENV for a process of the environment `venv`: whatever it starts by name (LLaMA-Factory's
    `torchrun`, Ray's workers and CLIs) comes from that environment, not from whichever is first on this PATH."""
    return {"PATH": os.pathsep.join([str(venv_bin(venv)), os.environ.get("PATH", os.defpath)]), "VIRTUAL_ENV": str(Path(venv).absolute())}


def die_with_parent() -> None:
    """In a child, before it runs: SIGTERM when the process that started it dies, even by SIGKILL (Linux).

    A pipeline killed mid-run must not leave a trainer writing into its run folder, or a model server holding its
    port, while the rerun starts another."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: the process group is still stopped on a clean exit


def run_logged(command: list[str], log_path: Path, env: dict[str, str], echo: Callable[[str], None] = print, cwd: Optional[str] = None) -> int:
    """Run `command`, echoing each output line and appending it to `log_path`; returns the exit code. The child dies
    with this process and holds this process's run-folder locks while it lives (`webdancer.runs.run_lock`)."""
    from webdancer.runs import held_lock_fds

    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(command)}\n")
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd,
                                preexec_fn=die_with_parent, pass_fds=held_lock_fds())
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            log.flush()
            echo(line.rstrip("\n"))
        return proc.wait()


def log_tail(log_path: Path, lines: int = 15) -> str:
    return "\n".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


PREFLIGHT_MARK = "WEBDANCER_PREFLIGHT "  # the line a trainer's check script prints its report on (its own copy: it runs without webdancer)


def run_preflight(command: list[str], env: dict[str, str], refusal: str, fix: str = "") -> dict:
    """Run a trainer's or server's check script in its own environment (`*_preflight.py`) and return its report; a
    refusal is a ConfigError with the lines that start with `refusal` (the trainer's own words), else its last lines."""
    import json

    from webdancer.errors import ConfigError

    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith(PREFLIGHT_MARK):
            return json.loads(line[len(PREFLIGHT_MARK):])
    said = [line for line in proc.stderr.splitlines() if line.startswith(refusal)] or proc.stderr.splitlines()[-15:]
    raise ConfigError("\n".join(said) + (f"\n{fix}" if fix else ""))
