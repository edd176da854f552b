"""Write docs/cli.md and docs/config.md from the code (tests/test_docs.py checks they are current).

    .venv/bin/python scripts/gen_docs.py
"""

from pathlib import Path

from webdancer.cli import cli
from webdancer.docgen import cli_reference, config_reference
from webdancer.jsonl import atomic_write_text
from webdancer.plugins import Plugins

DOCS = Path(__file__).resolve().parents[1] / "docs"


def main() -> None:
    plugins = Plugins()  # the installed plugins only, as a user has them
    plugins.add_commands(cli)
    atomic_write_text(DOCS / "cli.md", cli_reference(cli))
    atomic_write_text(DOCS / "config.md", config_reference(plugins))
    print(f"wrote {DOCS / 'cli.md'} and {DOCS / 'config.md'}")


if __name__ == "__main__":
    main()
