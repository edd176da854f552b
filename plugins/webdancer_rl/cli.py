"""`webdancer rl prepare|train`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from webdancer.cli import config_options, resolve_config


@click.group("rl")
def rl() -> None:
    """Reinforcement learning with verl (DAPO, multi-turn tool calling; its own environment, .venvs/rl)."""


@rl.command("prepare")
@config_options
@click.argument("qa_file", type=click.Path(exists=True, dir_okay=False))
@click.argument("overrides", nargs=-1)
def prepare_cmd(config_path: Optional[str], qa_file: str, overrides: tuple[str, ...]) -> None:
    """Write verl's train/val parquet, tool YAML and agent-loop YAML from QA_FILE."""
    from webdancer.jsonl import read_records
    from webdancer.records import QAItem
    from webdancer_rl.prepare import prepare

    cfg = resolve_config(config_path, overrides)
    out_dir = Path(cfg.rl.data_dir or cfg.run.dir / "rl_data")
    data = prepare(list(read_records(qa_file, QAItem)), cfg, out_dir)
    click.echo(f"{data.train_rows} train + {data.val_rows} val questions -> {data.train}, {data.val}; tools: {data.tool_config}")


@rl.command("train")
@config_options
@click.argument("overrides", nargs=-1)
@click.option("--print-command", is_flag=True, help="Write command.sh and print the verl command without running it.")
def train_cmd(config_path: Optional[str], overrides: tuple[str, ...], print_command: bool) -> None:
    """Run `python -m verl.trainer.main_ppo` with DAPO settings from `rl.*` on the prepared data."""
    import shlex

    from webdancer_rl.train import run_rl

    cfg = resolve_config(config_path, overrides)
    data_dir = Path(cfg.rl.data_dir or cfg.run.dir / "rl_data")
    output_dir = Path(cfg.rl.output_dir or cfg.run.dir / "rl")
    command = run_rl(cfg, data_dir, output_dir, echo=click.echo, dry_run=print_command)
    if print_command:
        click.echo(shlex.join(command))
    click.echo(f"command: {output_dir / 'command.sh'}")
