"""`webdancer model ...` and `webdancer serve`."""

from __future__ import annotations

import shlex
import signal
import time
from pathlib import Path
from typing import Optional

import click

from webdancer.cli import config_options, resolve_config


@click.group("model")
def model() -> None:
    """Named local models: list them, export one as a Hugging Face folder."""


@model.command("list")
def list_cmd() -> None:
    """List the named models and where their weights come from."""
    from webdancer_models.registry import MODELS

    for source in MODELS.values():
        click.echo(f"{source.name}\t{source.distribution}/{source.filename}\t{source.license}\t{source.description}")


@model.command("export")
@click.argument("name")
@click.argument("out_dir", type=click.Path(file_okay=False))
def export_cmd(name: str, out_dir: str) -> None:
    """Export model NAME to OUT_DIR (safetensors, tokenizer, wire-format chat template)."""
    from webdancer_models.export import export_model

    start = time.perf_counter()
    path = export_model(name, Path(out_dir))
    click.echo(f"exported {name} to {path} in {time.perf_counter() - start:.0f} s")


@model.command("template")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--install", is_flag=True, help="Give the folder the wire chat template when its own re-renders earlier turns.")
def template_cmd(folder: str, install: bool) -> None:
    """Check that FOLDER's chat template renders agent conversations verbatim (what SFT, RL and serving need)."""
    from transformers import AutoTokenizer

    from webdancer_models.chat_template import generation_prefix, renders_verbatim
    from webdancer_models.export import install_wire_template

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if renders_verbatim(tokenizer):
        click.echo(f"{folder}: its chat template renders agent conversations verbatim (generation prefix {generation_prefix(tokenizer)!r})")
        return
    if not install:
        raise click.ClickException(f"{folder}: its chat template re-renders earlier turns (thoughts dropped or rewritten); "
                                   "--install gives it the wire template")
    prefix = install_wire_template(Path(folder))
    click.echo(f"{folder}: wire chat template installed (generation prefix {prefix!r}); chat_template.jinja written")


@click.command("serve")
@config_options
@click.argument("overrides", nargs=-1)
@click.option("--print-command", is_flag=True, help="Print the server command and exit (e.g. to run it on a GPU host).")
@click.option("--check", is_flag=True, help="sglang, vllm: run the server's own argument checks on the command (no GPU needed) and exit.")
def serve(config_path: Optional[str], overrides: tuple[str, ...], print_command: bool, check: bool) -> None:
    """Start the model server of `serve.*` and keep it running until interrupted."""
    from webdancer_models.serve import check_server, served_model_name, server_command, start_server

    cfg = resolve_config(config_path, overrides)
    if check:
        report = check_server(cfg.serve)
        if report is None:
            raise click.UsageError(f"--check runs SGLang's or vLLM's own checks; serve.backend is {cfg.serve.backend}")
        if cfg.serve.backend == "sglang":
            click.echo(f"SGLang accepts the command (model {report['model_path']}, tp {report['tp_size']}; ServerArgs: {report['server_args']})")
        else:
            click.echo(f"vLLM accepts the command (model {report['model']}, dtype {report.get('resolved_dtype', report['dtype'])}; "
                       f"engine config: {report['engine_config']}{', kernels for this CPU loaded' if report.get('kernels') else ''})")
        return
    if print_command:
        click.echo(shlex.join(server_command(cfg.serve)))
        return

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM stops the server as Ctrl-C does, through the `finally` below

    signal.signal(signal.SIGTERM, interrupted)
    server = start_server(cfg.serve, cfg.run.dir / "logs")
    click.echo(f"ready: {server.base_url}  model: {served_model_name(cfg.serve)}  log: {server.log_file}", err=True)
    try:
        while server.proc is None or server.proc.poll() is None:
            time.sleep(1)
        click.echo(f"the server exited; last log lines:\n{server.tail()}", err=True)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
