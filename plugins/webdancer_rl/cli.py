"""`webdancer rl prepare|train`."""

from __future__ import annotations

from typing import Optional

import click

from webdancer.cli import config_options, resolve_config


@click.group("rl")
def rl() -> None:
    """Reinforcement learning (DAPO, multi-turn tool calling): verl on clusters, TRL on this machine (rl.engine)."""


@rl.command("prepare")
@config_options
@click.argument("qa_file", type=click.Path(exists=True, dir_okay=False))
@click.argument("overrides", nargs=-1)
def prepare_cmd(config_path: Optional[str], qa_file: str, overrides: tuple[str, ...]) -> None:
    """Write verl's train/val parquet, tool YAML and agent-loop YAML from QA_FILE."""
    from webdancer.jsonl import read_records
    from webdancer.records import QAItem
    from webdancer_rl.prepare import prepare
    from webdancer_rl.train import data_dir

    cfg = resolve_config(config_path, overrides)
    data = prepare(list(read_records(qa_file, QAItem)), cfg, data_dir(cfg))
    click.echo(f"{data.train_rows} train + {data.val_rows} val questions -> {data.train}, {data.val}; tools: {data.tool_config}")


@rl.command("train")
@config_options
@click.argument("overrides", nargs=-1)
@click.option("--print-command", is_flag=True, help="Write command.sh and print the engine's command without running it.")
def train_cmd(config_path: Optional[str], overrides: tuple[str, ...], print_command: bool) -> None:
    """Train with DAPO settings from `rl.*` on the prepared data: verl (`main_ppo`) or TRL (`rl.engine=trl`)."""
    import shlex

    from webdancer_rl.train import data_dir, output_dir, run_rl

    cfg = resolve_config(config_path, overrides)
    command = run_rl(cfg, data_dir(cfg), output_dir(cfg), echo=click.echo, dry_run=print_command)
    if print_command:
        click.echo(shlex.join(command))
    click.echo(f"command: {output_dir(cfg) / 'command.sh'}")
