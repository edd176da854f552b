"""`webdancer pipeline`."""

from __future__ import annotations

from typing import Optional

import click

from webdancer.cli import config_options, resolve_config


@click.command("pipeline")
@config_options
@click.argument("args", nargs=-1)
def pipeline(config_path: Optional[str], args: tuple[str, ...]) -> None:
    """Run every stage of `pipeline.stages` on [CONFIG_FILE] [key=value ...]: web, model, synth, split,
    sample, filter, eval_before, sft, eval_after, rl, report. A rerun resumes where the last one stopped."""
    from webdancer_pipeline.pipeline import Pipeline

    if args and "=" not in args[0]:  # `webdancer pipeline configs/quickstart.yaml key=value ...`
        if config_path:
            raise click.UsageError("give the config either as -c FILE or as the first argument, not both")
        config_path, args = args[0], args[1:]
    from webdancer.runs import run_lock

    cfg = resolve_config(config_path, args)
    with run_lock(cfg.run.dir, "webdancer pipeline"):
        Pipeline(cfg).run()
