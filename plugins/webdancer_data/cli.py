"""`webdancer data export`: a run's artifacts as a Hugging Face dataset folder, optionally pushed to the Hub."""

from __future__ import annotations

from typing import Optional

import click


@click.group("data")
def data() -> None:
    """Datasets in and out: export a run's artifacts for `datasets.load_dataset` and the Hub."""


@data.command("export")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), default=None, help="YAML config the run used (for the card).")
@click.argument("source", type=click.Path())
@click.argument("out", type=click.Path(file_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--push", "repo", default=None, help="Also upload to this Hub dataset repo (owner/name; needs HF_TOKEN).")
def export_cmd(config_path: Optional[str], source: str, out: str, overrides: tuple[str, ...], repo: Optional[str]) -> None:
    """Write SOURCE (a run folder, or one JSONL/JSON/parquet artifact) to OUT as parquet per config and split with a
    dataset card (generator, config hash, counts, drop reasons, the source web's licences)."""
    from webdancer.config_loader import load_config
    from webdancer_data.export import export_dataset, push

    cfg = load_config(config_path, overrides)
    result = export_dataset(source, out, cfg)
    for config, splits in result.rows.items():
        click.echo(f"{config}: " + ", ".join(f"{split} {n}{'' if n else ' (empty: no file written)'}" for split, n in splits.items()))
    click.echo(f"-> {result.out} (datasets.load_dataset('{result.out}', CONFIG); README.md is the card)")
    if repo:
        click.echo(f"pushed: {push(result.out, repo)}")
