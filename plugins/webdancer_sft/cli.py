"""`webdancer sft export|train`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from webdancer.cli import config_options, resolve_config


@click.group("sft")
def sft() -> None:
    """Supervised fine-tuning with LLaMA-Factory (its own environment, .venvs/sft)."""


@sft.command("export")
@click.argument("traj_file")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--split", default=None, help="The split of a dataset TRAJ_FILE (a folder or hf:OWNER/NAME).")
def export_cmd(traj_file: str, out_dir: str, split: Optional[str]) -> None:
    """Write TRAJ_FILE (ours or the reference release's) as a LLaMA-Factory sharegpt dataset in OUT_DIR.

    TRAJ_FILE is a trajectory JSONL, a dataset folder (e.g. `webdancer data export` output, with
    `#kept`) or a Hub dataset `hf:OWNER/NAME` from the local Hugging Face cache."""
    from webdancer.datasources import DataSourceError, is_dataset_ref
    from webdancer_sft.export import export_sft

    if not is_dataset_ref(traj_file) and not Path(traj_file).is_file():
        raise DataSourceError(f"{traj_file}: no such file, dataset folder or hf: dataset")
    stats = export_sft(traj_file, Path(out_dir), split)
    click.echo(f"exported {stats.exported} trajectories to {out_dir} (skipped: {stats.skipped or 'none'})")


@sft.command("train")
@config_options
@click.argument("overrides", nargs=-1)
@click.option("--print-command", is_flag=True, help="Write the YAML and command.sh and print the command without running it.")
@click.option("--check", is_flag=True, help="Run LLaMA-Factory's own checks of the YAML on this machine (no GPU needed) and exit.")
def train_cmd(config_path: Optional[str], overrides: tuple[str, ...], print_command: bool, check: bool) -> None:
    """Write the LLaMA-Factory YAML from `sft.*` and run `llamafactory-cli train` on it, streaming its log."""
    import shlex

    from webdancer.tracking import Reporting
    from webdancer_sft.train import preflight, run_training, write_launch

    cfg = resolve_config(config_path, overrides)
    dataset_dir = Path(cfg.sft.dataset_dir or cfg.run.dir / "sft_data")
    output_dir = Path(cfg.sft.output_dir or cfg.run.dir / "sft")
    if print_command or check:
        command = write_launch(cfg.sft, dataset_dir, output_dir, Reporting.of(cfg), must_exist=check)
        if check:
            report = preflight(cfg.sft, command)
            click.echo(f"LLaMA-Factory accepts {command[-1]}: {report['examples']} examples, {report['distributed']}, "
                       f"deepspeed {report['deepspeed'] or 'off'}" + (f"; substituted {report['substituted']}" if report["substituted"] else ""))
        else:
            click.echo(shlex.join(command))
        click.echo(f"command: {output_dir / 'command.sh'}")
        return
    from webdancer.runs import run_lock

    with run_lock(cfg.run.dir, "webdancer sft train"):
        result = run_training(cfg.sft, dataset_dir, output_dir, echo=click.echo, reporting=Reporting.of(cfg))
    losses = result["losses"]
    if losses:
        click.echo(f"loss {losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} logged steps; checkpoint in {output_dir}")
