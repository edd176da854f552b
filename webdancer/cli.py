"""The `webdancer` command line; plugins add their own subcommands through `register_commands`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import click

from webdancer import __version__, aio, console
from webdancer.cli_eval import eval_group
from webdancer.cli_traj import traj_group
from webdancer.config import WebdancerConfig
from webdancer.config_loader import config_to_yaml, load_config
from webdancer.errors import WebdancerError
from webdancer.plugins import get_plugins
from webdancer.records import Step, ToolCall, stable_id

VERBOSITY_FLAGS = ("-q", "--quiet", "-v", "-vv", "--verbose")


class WebdancerGroup(click.Group):
    """Turns WebdancerError into one clear line and its exit code (2 for config errors). `-q/--quiet` and
    `-v/--verbose` are the root's options but may stand anywhere before `--`: `webdancer pipeline x.yaml -q` works."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if ctx.parent is None:
            end = args.index("--") if "--" in args else len(args)
            flags = [a for a in args[:end] if a in VERBOSITY_FLAGS]
            args = flags + [a for a in args[:end] if a not in VERBOSITY_FLAGS] + args[end:]
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except WebdancerError as exc:
            click.secho(f"error: {exc}", fg="red", err=True, color=console.colour_allowed(sys.stderr))
            ctx.exit(exc.exit_code)


def config_options(fn):
    """`-c CONFIG` plus trailing `key=value` overrides, shared by every command that reads config."""
    fn = click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), default=None, help="YAML config (see configs/).")(fn)
    return fn


def resolve_config(config_path: Optional[str], overrides: tuple[str, ...]) -> WebdancerConfig:
    return load_config(config_path, overrides)


@click.group(cls=WebdancerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="webdancer")
@click.option("-v", "--verbose", count=True, help="More logging (-vv: debug, and what libraries and trackers print).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings, errors and the closing summary.")
def cli(verbose: int, quiet: bool) -> None:
    """Train and run web information-seeking agents (WebDancer)."""
    console.configure(-1 if quiet else verbose)


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins_cmd(as_json: bool) -> None:
    """List installed plugins and what each registers."""
    plugins = get_plugins()
    infos = plugins.describe()
    if as_json:
        out = {
            "hook_kinds": plugins.kinds,
            "plugins": [
                {
                    "name": i.name,
                    "distribution": i.distribution,
                    "version": i.version,
                    "registers": i.registers,
                    "commands": i.commands,
                    "error": i.error or None,
                }
                for i in infos
            ],
        }
        click.echo(json.dumps(out, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="webdancer plugins")
    table.add_column("plugin", no_wrap=True)
    table.add_column("distribution", no_wrap=True)
    table.add_column("registers")
    table.add_column("status")
    for i in infos:
        dist = f"{i.distribution} {i.version}".strip()
        registers = "; ".join(f"{k}: {', '.join(v)}" for k, v in i.registers.items() if v)
        if i.commands:
            registers = f"{registers}; commands" if registers else "commands"
        status = f"[red]failed: {i.error}[/red]" if i.error else "ok"
        table.add_row(i.name, dist, registers, status)
    Console().print(table)


@cli.group("config")
def config_group() -> None:
    """Inspect configuration."""


@config_group.command("show")
@config_options
@click.argument("overrides", nargs=-1)
def config_show(config_path: Optional[str], overrides: tuple[str, ...]) -> None:
    """Print the resolved config (defaults <- file <- overrides)."""
    click.echo(config_to_yaml(resolve_config(config_path, overrides)), nl=False)


@cli.command("tool")
@config_options
@click.argument("name")
@click.argument("json_args")
@click.argument("overrides", nargs=-1)
def tool_cmd(config_path: Optional[str], name: str, json_args: str, overrides: tuple[str, ...]) -> None:
    """Call tool NAME with JSON_ARGS and print its observation (NAME may be a tool of a tool set in agent.tools,
    such as an MCP server's `<server>__<tool>`)."""
    from webdancer.tools import ToolBox, ToolSet
    from webdancer.wire import validate_arguments

    cfg = resolve_config(config_path, overrides)
    try:
        arguments = json.loads(json_args)
    except json.JSONDecodeError as exc:
        raise click.UsageError(f"JSON_ARGS is not valid JSON ({exc.msg}); example: '{{\"query\": [\"python\"]}}'")
    if not isinstance(arguments, dict):
        raise click.UsageError("JSON_ARGS must be a JSON object")
    registered = name in get_plugins().registry.get("tools", {})
    if not registered and not any(issubclass(get_plugins().get("tools", t), ToolSet) for t in cfg.agent.tools):
        get_plugins().get("tools", name)  # the usual error: no such tool, and what is installed
    toolbox = ToolBox.for_run(cfg, [name] if registered else cfg.agent.tools)  # else: look in the run's tool sets

    async def call_once() -> int:
        async with toolbox:
            tool = toolbox.tools.get(name)
            if tool is None:
                raise click.UsageError(f"no tool named {name!r}; the run offers {', '.join(toolbox.tools) or 'none'} (agent.tools)")
            problem = validate_arguments(arguments, tool.parameters)
            if problem:
                raise click.UsageError(f"tool '{name}': {problem}")
            result = await toolbox.run(ToolCall(name, arguments))
        click.echo(result.content)
        return 1 if result.error else 0

    sys.exit(aio.run(call_once()))


def print_step(step: Step) -> None:
    click.secho(f"── step {step.index + 1} ──", fg="cyan")
    if step.thought:
        click.secho(f"think: {step.thought}", dim=True)
    if step.tool_call is not None:
        click.secho(f"call:  {step.tool_call.name} {json.dumps(step.tool_call.arguments, ensure_ascii=False)}", fg="yellow")
    if step.parse_error:
        click.secho(f"format error: {step.parse_error}", fg="red")
    if step.tool_result is not None and step.tool_call is not None:
        text = step.tool_result.content
        click.echo("obs:   " + (text[:600] + f" … [{len(text)} chars]" if len(text) > 600 else text))
    if step.answer is not None:
        click.secho(f"answer: {step.answer}", fg="green", bold=True)


@cli.command("run")
@config_options
@click.argument("question")
@click.argument("overrides", nargs=-1)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Append the trajectory to this JSONL file.")
def run_cmd(config_path: Optional[str], question: str, overrides: tuple[str, ...], out: Optional[str]) -> None:
    """Run the agent once on QUESTION, streaming its steps."""
    from webdancer.agent import configured_agent
    from webdancer.jsonl import JsonlAppender

    cfg = resolve_config(config_path, overrides)
    sink = JsonlAppender(out) if out else None
    sample = 0
    if sink is not None:  # another run of the same question is the next sample, never a duplicate id
        while f"{stable_id(question)}:{sample}" in sink:
            sample += 1

    async def run_once():
        async with configured_agent(cfg) as agent:
            return await agent.run(question, sample_index=sample, on_step=print_step)

    traj = aio.run(run_once())
    click.secho(f"termination: {traj.termination}  turns: {len(traj.steps)}  time: {traj.elapsed_s:.1f}s", fg="cyan")
    if traj.error:
        click.secho(f"error: {traj.error}", fg="red", err=True)
    if sink is not None:
        sink.write(traj)
        sink.close()
    sys.exit(0 if traj.termination == "answered" else 1)


class SynthGroup(click.Group):
    """`webdancer synth NAME` for every registered synthesizer, plus `webdancer synth stats FILE`."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(get_plugins().components("synthesizers")) + ["stats"]

    def get_command(self, ctx: click.Context, name: str) -> Optional[click.Command]:
        if name == "stats":
            return synth_stats
        if name in get_plugins().components("synthesizers"):
            return _synth_command(name)
        return None


def _synth_command(name: str) -> click.Command:
    @click.command(name, help=f"Run the `{name}` synthesizer (options under `synth.{name}.*`).")
    @config_options
    @click.argument("overrides", nargs=-1)
    @click.option("--out", type=click.Path(dir_okay=False), default=None, help="QA JSONL to append to (default runs/<run>/qa_<name>.jsonl).")
    @click.option("--input", "input_file", type=click.Path(dir_okay=False), default=None, help="Seed QA file, for synthesizers that take one.")
    def command(config_path: Optional[str], overrides: tuple[str, ...], out: Optional[str], input_file: Optional[str]) -> None:
        from webdancer.synth import synthesize

        cfg = resolve_config(config_path, overrides)
        out_path = out or str(cfg.run.dir / f"qa_{name}.jsonl")
        counts = synthesize(cfg, name, Path(out_path), input_file)
        click.echo(f"{name}: wrote {counts['written']} items to {out_path} ({counts['already_there']} already there); dropped: {counts['dropped'] or 'none'}")

    return command


@cli.group("synth", cls=SynthGroup)
def synth_group() -> None:
    """Synthesize browsing QA data (CrawlQA, E2HQA, plugins) and inspect it."""


@click.command("stats")
@click.argument("qa_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def synth_stats(qa_file: str, as_json: bool) -> None:
    """Counts of QA_FILE by tag, kind, hops and difficulty."""
    from webdancer.jsonl import read_records
    from webdancer.records import QAItem
    from webdancer.synth import qa_stats

    items = list(read_records(qa_file, QAItem))
    stats = qa_stats(items)
    if as_json:
        click.echo(json.dumps({"items": len(items), **stats}, indent=2))
        return
    click.echo(f"{len(items)} items in {qa_file}")
    for key, counts in stats.items():
        click.echo(f"  {key:<11} " + ", ".join(f"{k}: {v}" for k, v in counts.items()))


@cli.command("sample")
@config_options
@click.argument("qa_file")
@click.argument("overrides", nargs=-1)
@click.option("--split", default=None, help="The split of a dataset QA_FILE (a folder or hf:OWNER/NAME).")
@click.option("--n", "n", type=int, default=None, help="Rollouts per question (default sample.n).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Trajectory JSONL to append to (default runs/<run>/trajectories_<policy>.jsonl).")
@click.option("--keep-failed", is_flag=True, help="Do not run again the rollouts an outage ended (recorded in <out>.outages.jsonl).")
def sample_cmd(config_path: Optional[str], qa_file: str, overrides: tuple[str, ...], split: Optional[str], n: Optional[int],
               out: Optional[str], keep_failed: bool) -> None:
    """Roll out the configured policy on every question of QA_FILE, N times each (resumable).

    QA_FILE is our QA JSONL, a dataset folder (e.g. `webdancer data export` output, with `#qa`) or a
    Hub dataset `hf:OWNER/NAME` from the local Hugging Face cache.

    A rollout that an outage ended (model endpoint or tool backend down after its retries) is not a
    result: it is recorded apart, the command exits with an error, and a rerun runs it again."""

    from rich.progress import Progress, TextColumn

    from webdancer.agent import configured_agent
    from webdancer.breaker import BREAKERS
    from webdancer.datasources import read_qa
    from webdancer.sampling import check_no_outages, sample

    cfg = resolve_config(config_path, overrides)
    items = read_qa(qa_file, split)
    if not items:
        raise click.UsageError(f"{qa_file} has no QA items")
    runs = n if n is not None else cfg.sample.n
    out_path = Path(out or cfg.run.dir / f"trajectories_{cfg.agent.policy}.jsonl")

    with Progress(TextColumn("{task.description}"), transient=False) as progress:
        task = progress.add_task("starting", total=None)

        def show(stats) -> None:
            progress.update(
                task,
                description=f"done {stats.done}/{stats.planned}  correct {stats.correct}  failed {stats.failed}  outages {stats.outages}"
                + (f"  {stats.tokens_per_s:.1f} tok/s" if stats.tokens_per_s else "")  # a scripted policy generates no tokens
                + "".join(f"  {reason} {count}" for reason, count in sorted(stats.terminations.items()))
                + "".join(f"\n  paused: {d}" for d in BREAKERS.down()),
            )

        async def sample_all():
            async with configured_agent(cfg) as agent:
                return await sample(agent, items, runs, out_path, cfg.agent.concurrency, show, keep_failed)

        stats = aio.run(sample_all())
        show(stats)
    click.echo(f"{stats.done} new trajectories ({stats.already_there} already there) -> {out_path}")
    from webdancer.tracking import track

    track(cfg, f"sample/{cfg.agent.policy}", stats.tracked())
    for tool, c in stats.tool_store.items():
        click.echo(f"tool store, {tool}: {c['calls']} calls, {c['hits']} served from the store, {c['misses']} live "
                   f"(estimated cost {c['cost']:g}), {c['replay_misses']} not recorded")
    check_no_outages(stats, out_path, "this command")


@cli.command("filter")
@config_options
@click.argument("traj_file", type=click.Path(exists=True, dir_okay=False))
@click.argument("overrides", nargs=-1)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Kept trajectories (default runs/<run>/kept.jsonl).")
def filter_cmd(config_path: Optional[str], traj_file: str, overrides: tuple[str, ...], out: Optional[str]) -> None:
    """Keep valid, correct, good trajectories of TRAJ_FILE (ours or the reference release's); report why others went."""

    from rich.console import Console
    from rich.table import Table

    from webdancer.filtering import filter_configured, write_report

    cfg = resolve_config(config_path, overrides)
    out_path = Path(out or cfg.run.dir / "kept.jsonl")
    report = aio.run(filter_configured(Path(traj_file), out_path, cfg))
    report_path = out_path.with_name(out_path.stem + "_report.json")
    write_report(report, report_path)
    from webdancer.tracking import track

    track(cfg, "filter", report.to_json())
    table = Table(title=f"filter: {report.kept} kept of {report.total} (correctness: {report.correctness_method})")
    table.add_column("stage")
    table.add_column("reason")
    table.add_column("dropped", justify="right")
    for stage, reasons in report.dropped.items():
        for reason, count in sorted(reasons.items()):
            table.add_row(stage, reason, str(count))
    Console().print(table)
    for policy, counts in sorted(report.by_policy.items()):
        click.echo(f"  policy {policy}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    click.echo(f"kept -> {out_path}; report -> {report_path}")


cli.add_command(eval_group)
cli.add_command(traj_group)


def main() -> None:
    get_plugins().add_commands(cli)
    cli(prog_name="webdancer")


if __name__ == "__main__":
    main()
