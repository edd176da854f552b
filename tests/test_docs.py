"""docs/cli.md and docs/config.md are generated from the code; they must match what it generates now."""

from conftest import ROOT

from webdancer.cli import cli
from webdancer.docgen import cli_reference, config_reference, field_notes
from webdancer.plugins import Plugins

HOW = "regenerate them: .venv/bin/python scripts/gen_docs.py"


def test_cli_and_config_references_are_current():
    plugins = Plugins()  # the installed plugins, without the tests' in-process ones
    plugins.add_commands(cli)
    assert (ROOT / "docs" / "cli.md").read_text() == cli_reference(cli), f"docs/cli.md is stale: {HOW}"
    assert (ROOT / "docs" / "config.md").read_text() == config_reference(plugins), f"docs/config.md is stale: {HOW}"


def test_the_references_cover_every_command_and_key():
    text = (ROOT / "docs" / "cli.md").read_text()
    for command in ("webdancer rl train", "webdancer sft export", "webdancer eval run", "webdancer pipeline", "webdancer model template"):
        assert f"## {command}\n" in text
    config = (ROOT / "docs" / "config.md").read_text()
    for key in ("`rl.engine`", "`rl.max_turn_tokens`", "`sft.template`", "`pipeline.rl_port`", "`tools.visit` ", "`rewards.answer`"):
        assert key in config or key.strip() in config


def test_field_notes_read_the_comments_beside_and_above_a_field():
    from dataclasses import dataclass

    @dataclass
    class Example:
        # above, first line
        # above, second line
        a: int = 1
        b: str = "x"  # beside
        c: int = 0

    assert field_notes(Example) == {"a": "above, first line above, second line", "b": "beside"}


def test_the_benchmark_table_is_generated_from_the_results_files():
    """benchmarks/README.md is what run_all.py generates from benchmarks/results/: a figure typed by hand, or a results
    file added without regenerating, fails here."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from run_all import readme_text
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert (ROOT / "benchmarks" / "README.md").read_text() == readme_text(), "regenerate it: .venv/bin/python benchmarks/run_all.py --table"


def test_the_readme_quickstart_table_is_generated_from_the_newest_results_file():
    import sys

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from gen_docs import quickstart_table, readme_with_table
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    readme = (ROOT / "README.md").read_text()
    assert readme == readme_with_table(readme, quickstart_table()), f"README.md's quickstart table is stale: {HOW}"
    assert len(readme.encode()) < 10_000, "README.md is over 10 KB: move detail into docs/"


def test_the_docs_state_current_behaviour_without_dated_notes():
    """Dated measurements and histories live in benchmarks/ (results files, history.md) and CHANGELOG.md."""
    import re

    dated = [f"{page.name}:{n}: {line.strip()[:80]}" for page in sorted((ROOT / "docs").glob("*.md"))
             for n, line in enumerate(page.read_text().splitlines(), 1) if re.search(r"\b20\d\d-\d\d-\d\d\b", line)]
    assert not dated, "move dated notes to benchmarks/history.md or CHANGELOG.md:\n" + "\n".join(dated)
