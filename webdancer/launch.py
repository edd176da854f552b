"""Running a trainer's native command as a child process: the command recorded, its log streamed and kept."""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional

from webdancer.jsonl import atomic_write_text


def write_command_script(path: Path, command: list[str], note: str, env: Optional[dict[str, str]] = None) -> None:
    """`command.sh` beside the outputs, so a person can rerun exactly this by hand or on a cluster."""
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in (env or {}).items())
    atomic_write_text(path, f"#!/usr/bin/env bash\n# {note}\n{exports}{shlex.join(command)}\n")
    path.chmod(0o755)


def run_logged(command: list[str], log_path: Path, env: dict[str, str], echo: Callable[[str], None] = print, cwd: Optional[str] = None) -> int:
    """Run `command`, echoing each output line and appending it to `log_path`; returns the exit code."""
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(command)}\n")
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            log.flush()
            echo(line.rstrip("\n"))
        return proc.wait()


def log_tail(log_path: Path, lines: int = 15) -> str:
    return "\n".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
