"""SGLang's own command-line parser on a `python -m sglang.launch_server ...` command, on any machine with SGLang.

Run in the serving environment (`webdancer serve --check` does; the contract suite runs it on every shipped GPU
config). It does what `sglang.launch_server` does before the server starts (`prepare_server_args`: SGLang's parser,
a `--config` file merged as SGLang merges it, then `ServerArgs`), and stops where SGLang needs an accelerator: on a
machine without one, `ServerArgs`' own checks past that point are recorded as not run.

    python sglang_preflight.py ARG...     (the arguments after `-m sglang.launch_server`; only SGLang is imported)

Prints `WEBDANCER_PREFLIGHT {json}`; a refusal prints SGLang's own message and exits 1.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys

MARK = "WEBDANCER_PREFLIGHT "
NO_ACCELERATOR = "No accelerator"  # ServerArgs' words where it needs a device (SGLang 0.5.14's platform check)


def check(argv: list[str]) -> dict:
    from sglang.srt.server_args import ServerArgs

    parser = argparse.ArgumentParser(prog="sglang serve")
    ServerArgs.add_cli_args(parser)
    if "--config" in argv:
        from sglang.srt.server_args_config_parser import ConfigArgumentMerger

        argv = ConfigArgumentMerger(parser).merge_config_with_args(argv)
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            raw = parser.parse_args(argv)
    except SystemExit:
        raise ValueError(said.getvalue().strip().splitlines()[-1]) from None
    report = {"model_path": raw.model_path, "tp_size": raw.tp_size, "port": raw.port, "server_args": "checked"}
    try:
        ServerArgs.from_cli_args(raw)
    except RuntimeError as exc:
        if NO_ACCELERATOR not in str(exc):
            raise
        report["server_args"] = f"not run here ({exc})"
    return report


def main(argv: list[str]) -> int:
    try:
        report = check(argv)
    except Exception as exc:  # SGLang's own words are the message
        print(f"SGLang refuses this command: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(MARK + json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
