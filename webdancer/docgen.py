"""The CLI and config references in docs/, generated from the code (click's help, the config dataclasses).

`python scripts/gen_docs.py` writes them; a test fails when the committed files differ from what the
code generates now, so the references never drift from the code.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import re
import textwrap
import tokenize
import typing
from typing import Any

import click

WIDTH = 100


def cli_reference(cli: click.Group) -> str:
    """Every command's help, as `webdancer … --help` prints it, one section each."""
    out = ["# CLI reference", "", "Generated from the commands' own help (`python scripts/gen_docs.py`); "
           "`webdancer COMMAND --help` prints the same.", ""]

    def walk(cmd: click.Command, path: list[str], parent: click.Context | None) -> None:
        # The command's own context settings (e.g. `-h` for help), as when it really runs.
        ctx = click.Context(cmd, info_name=path[-1], parent=parent, **{**cmd.context_settings, "max_content_width": WIDTH,
                                                                        "terminal_width": WIDTH})
        out.extend([f"## {' '.join(path)}", "", "```text", cmd.get_help(ctx).rstrip(), "```", ""])
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                if sub is not None and not sub.hidden:
                    walk(sub, path + [name], ctx)

    walk(cli, ["webdancer"], None)
    return "\n".join(out).rstrip() + "\n"


def field_notes(cls: type) -> dict[str, str]:
    """The comments written beside or above each field of a dataclass, by field name."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    notes: dict[str, str] = {}
    pending: list[str] = []
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    lines = source.splitlines()
    comments = {t.start[0]: t.string.lstrip("#").strip() for t in tokens if t.type == tokenize.COMMENT}
    for lineno, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(comments.get(lineno, ""))
            continue
        match = re.match(r"\s{4}(\w+)\s*:", line)
        if match and not stripped.startswith(("def ", "@")):
            text = " ".join(pending + ([comments[lineno]] if lineno in comments else []))
            if text:
                notes[match.group(1)] = text
        pending = [] if stripped else pending
    return notes


def _type_name(tp: Any) -> str:
    text = str(tp) if not isinstance(tp, type) else tp.__name__
    return text.replace("typing.", "").replace("NoneType", "None")


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
        if dataclasses.is_dataclass(value):
            return "(section)"
    else:
        return "(required)"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _doc(cls: type) -> str:
    """A dataclass's own docstring (not the signature dataclasses writes when there is none)."""
    doc = inspect.getdoc(cls) or ""
    return "" if doc.startswith(f"{cls.__name__}(") else doc


def dataclass_table(cls: type, prefix: str = "") -> list[str]:
    hints = typing.get_type_hints(cls)
    notes = field_notes(cls)
    rows = ["| key | type | default | what |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints.get(f.name)):
            continue
        choices = f.metadata.get("choices")
        kind = " \\| ".join(f"`{c}`" for c in choices) if choices else f"`{_type_name(hints.get(f.name, f.type))}`"
        note = notes.get(f.name, "").replace("|", "\\|")
        rows.append(f"| `{prefix}{f.name}` | {kind} | `{_default(f).replace('|', '/')}` | {note} |")
    return rows


def config_reference(plugins: Any) -> str:
    """Every config key: the core sections and those of `plugins`, then each registered component's options."""
    from webdancer.config import config_schema

    schema = config_schema(plugins)
    owners = plugins.owners("config_sections")
    out = ["# Config reference", "", "Generated from the config dataclasses (`python scripts/gen_docs.py`); "
           "`webdancer config show` prints the values in effect. Keys are set in YAML (`-c FILE`, `defaults:` "
           "composes files) or as `key=value` overrides; an unknown key or a bad value is an error naming it.", ""]
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        section = hints[f.name]
        doc = _doc(section) if dataclasses.is_dataclass(section) else ""
        out += [f"## `{f.name}`", ""] + ([f"Declared by the `{owners[f.name]}` plugin.", ""] if f.name in owners else [])
        if dataclasses.is_dataclass(section):
            out += ([doc, ""] if doc else []) + dataclass_table(section, f"{f.name}.")
            nested = [(g.name, typing.get_type_hints(section)[g.name]) for g in dataclasses.fields(section)]
            for name, tp in nested:
                if dataclasses.is_dataclass(tp):
                    out += ["", f"### `{f.name}.{name}`", ""] + dataclass_table(tp, f"{f.name}.{name}.")
        else:
            out.append(field_notes(schema).get(f.name, "") or f"`{_type_name(section)}`")
        out.append("")
    out += ["## Component options", "", "Each component takes its own options, checked against its `Config` dataclass: "
            "`<kind>.<name>`: `tools.<name>`, `synth.<name>`, `policies.<name>`, `rewards.<name>` (beside the reward's `weight`).", ""]
    where = {"tools": "tools.{}", "synthesizers": "synth.{}", "policies": "policies.{}",
             "rewards": "rewards.{}", "search_backends": "tools.search (backend: {})", "page_readers": "tools.visit (reader: {})"}
    for kind in plugins.kinds:
        for name, component in sorted(plugins.components(kind).items()):
            config = getattr(component, "Config", None)
            if config is None or not dataclasses.is_dataclass(config) or not dataclasses.fields(config):
                continue
            label = "judge (the judge reward's options: its section above)" if (kind, name) == ("rewards", "judge") else where.get(kind, kind + ".{}").format(name)
            out += [f"### `{label}`", ""] + dataclass_table(config) + [""]
    return "\n".join(out).rstrip() + "\n"
