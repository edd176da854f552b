"""vLLM's own checks on a `python -m vllm.entrypoints.launchers.api_server.entry ...` command, before a start of
minutes would find the problem.

Run in vLLM's environment (`webdancer serve --check` and the pipeline's start do). It does what the server does
before it loads weights: vLLM's parser, `validate_parsed_serve_args`, the engine arguments, and where the model
folder is here, `create_engine_config` (the model's config read, dtype and length checked against it, the device
found). With vLLM's CPU build it also loads the kernels for this CPU, as the server's workers will: a CPU without
the instructions they need dies here with SIGILL instead of minutes into a start.

    python vllm_preflight.py ARG...     (the arguments after `-m vllm.entrypoints.launchers.api_server.entry`)

Prints `WEBDANCER_PREFLIGHT {json}`; a refusal prints vLLM's own message and exits 1.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys

MARK = "WEBDANCER_PREFLIGHT "


def check(argv: list[str]) -> dict:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            args = parser.parse_args(argv)
    except SystemExit:
        raise ValueError(said.getvalue().strip().splitlines()[-1]) from None
    validate_parsed_serve_args(args)
    engine_args = AsyncEngineArgs.from_cli_args(args)
    report = {"model": args.model, "dtype": args.dtype, "max_model_len": args.max_model_len, "engine_config": "not run here"}
    if os.path.isfile(os.path.join(args.model, "config.json")):
        config = engine_args.create_engine_config()
        report["engine_config"] = "checked"
        report["device"] = str(config.device_config.device_type)
        report["resolved_dtype"] = str(config.model_config.dtype).removeprefix("torch.")
        if report["device"] == "cpu":
            from vllm.platforms import current_platform

            current_platform.import_kernels()
            report["kernels"] = "loaded"
    return report


def main(argv: list[str]) -> int:
    try:
        with contextlib.redirect_stdout(sys.stderr):  # vLLM logs to stdout; the report line is ours alone
            report = check(argv)
    except Exception as exc:  # vLLM's own words are the message
        said = " ".join(str(exc).split())  # one line: pydantic's messages span several
        print(f"vLLM refuses this command: {type(exc).__name__}: {said}", file=sys.stderr)
        return 1
    print(MARK + json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
