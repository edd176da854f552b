"""`webdancer rl prepare|train`."""

from __future__ import annotations

import contextlib
from typing import Optional

import click

from webdancer.cli import config_options, resolve_config


@click.group("rl")
def rl() -> None:
    """Reinforcement learning (DAPO, multi-turn tool calling): verl on clusters, TRL on this machine (rl.engine)."""


@rl.command("prepare")
@config_options
@click.argument("qa_file")
@click.argument("overrides", nargs=-1)
@click.option("--split", default=None, help="The split of a dataset QA_FILE (a folder or hf:OWNER/NAME).")
def prepare_cmd(config_path: Optional[str], qa_file: str, overrides: tuple[str, ...], split: Optional[str]) -> None:
    """Write verl's train/val parquet, tool YAML and agent-loop YAML from QA_FILE.

    QA_FILE is our QA JSONL, a dataset folder (e.g. `webdancer data export` output, with `#qa`) or a
    Hub dataset `hf:OWNER/NAME` from the local Hugging Face cache."""
    from webdancer.datasources import read_qa
    from webdancer_rl.prepare import prepare
    from webdancer_rl.train import data_dir

    cfg = resolve_config(config_path, overrides)
    data = prepare(read_qa(qa_file, split), cfg, data_dir(cfg))
    click.echo(f"{data.train_rows} train + {data.val_rows} val questions -> {data.train}, {data.val}; tools: {data.tool_config}")


@rl.command("train")
@config_options
@click.argument("overrides", nargs=-1)
@click.option("--print-command", is_flag=True, help="Write command.sh and print the engine's command without running it.")
@click.option("--check", is_flag=True, help="Run the engine's own checks of the command on this machine (verl: no GPU needed) and exit.")
def train_cmd(config_path: Optional[str], overrides: tuple[str, ...], print_command: bool, check: bool) -> None:
    """Train with DAPO settings from `rl.*` on the prepared data: verl (`main_ppo`) or TRL (`rl.engine=trl`)."""
    import shlex

    from webdancer.runs import run_lock
    from webdancer_rl.train import data_dir, output_dir, run_rl

    cfg = resolve_config(config_path, overrides)
    with run_lock(cfg.run.dir, "webdancer rl train") if not (print_command or check) else contextlib.nullcontext():
        command = run_rl(cfg, data_dir(cfg), output_dir(cfg), echo=click.echo, dry_run=print_command, check_only=check)
    if print_command:
        click.echo(shlex.join(command))
    click.echo(f"command: {output_dir(cfg) / 'command.sh'}")
