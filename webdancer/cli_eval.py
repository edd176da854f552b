"""`webdancer eval run|compare`: benchmark runs with reports, and two runs side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from webdancer.evalsets import FORMATS


@click.group("eval")
def eval_group() -> None:
    """Evaluate the agent on GAIA / WebWalkerQA / BrowseComp / our QA files, and compare runs."""


@eval_group.command("run")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), default=None, help="YAML config (see configs/).")
@click.argument("eval_file")
@click.argument("overrides", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["auto", *FORMATS]), default="auto", show_default=True)
@click.option("--k", type=int, default=None, help="Runs per question (default eval.k).")
@click.option("--name", default=None, help="Run name: results go to runs/<run>/eval/<name>/ (default <file stem>-<model>).")
@click.option("--split", default=None, help="The split of a dataset EVAL_FILE (a folder or hf:OWNER/NAME); may be left out when it has one.")
@click.option("--keep-failed", is_flag=True, help="Do not run again the runs an outage ended (they stay missing, never wrong).")
def eval_run(config_path: Optional[str], eval_file: str, overrides: tuple[str, ...], fmt: str, k: Optional[int], name: Optional[str],
             split: Optional[str], keep_failed: bool) -> None:
    """Run the agent k times on every question of EVAL_FILE, judge, and write results.json, report.md, plot.png.

    EVAL_FILE is a benchmark file, a dataset folder or a Hub dataset `hf:OWNER/NAME` (from the local
    Hugging Face cache when offline), optionally ending in `#CONFIG`.

    Runs that an outage ended are not counted (results.json says complete: false, the command exits
    with an error); rerun the same command to run them."""
    from rich.console import Console
    from rich.markdown import Markdown

    from webdancer.breaker import BREAKERS
    from webdancer.config_loader import load_config
    from webdancer.evaluation.report import summary_line
    from webdancer.evaluation.run import check_complete, default_eval_name, run_eval

    cfg = load_config(config_path, overrides)
    if k is not None:
        if k < 1:
            raise click.BadParameter("must be at least 1", param_hint="--k")
        cfg.eval.k = k
    name = name or default_eval_name(eval_file, cfg)

    def show(stats) -> None:
        down = "".join(f"  paused: {d}" for d in BREAKERS.down())
        click.echo(f"\r  runs {stats.done}/{stats.planned} ({stats.already_there} already there){down}", nl=False, err=True)

    results = run_eval(cfg, eval_file, fmt, name, show, keep_failed, split)
    click.echo("", err=True)
    out_dir = cfg.run.dir / "eval" / name
    Console().print(Markdown((out_dir / "report.md").read_text(encoding="utf-8")))
    click.echo(f"{summary_line(results)}  -> {out_dir}/(results.json, report.md, plot.png)")
    check_complete(results, out_dir, "this command")


@eval_group.command("compare")
@click.argument("runs", nargs=-1, required=True)
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Also write compare.md and compare.png here.")
def eval_compare(runs: tuple[str, ...], out: Optional[str]) -> None:
    """Show eval runs (folders or results.json files, each as PATH or LABEL=PATH) side by side, e.g. before vs after SFT."""
    from rich.console import Console
    from rich.markdown import Markdown

    from webdancer.evaluation.report import load_results, plot_results, render_comparison
    from webdancer.jsonl import atomic_write_text

    if len(runs) < 2:
        raise click.UsageError("give at least two runs to compare")
    loaded: dict[str, dict] = {}
    for given in runs:
        named, _, path = given.partition("=") if "=" in given and not Path(given).exists() else ("", "", given)
        if not Path(path).exists():
            raise click.BadParameter(f"{path} does not exist (give an eval folder or its results.json, as PATH or LABEL=PATH)",
                                     param_hint="RUNS")
        res = load_results(path)
        label = named or res.get("meta", {}).get("name") or Path(path).name
        while label in loaded:
            label += "'"
        loaded[label] = res
    text = render_comparison(loaded)
    Console().print(Markdown(text))
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(out) / "compare.md", text)
        plot_results(loaded, Path(out) / "compare.png")
        click.echo(f"-> {out}/compare.md, {out}/compare.png")
