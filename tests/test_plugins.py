import json

import pytest
from click.testing import CliRunner

from webdancer import hookimpl
from webdancer.cli import cli
from webdancer.errors import PluginError
from webdancer.plugins import Plugins, set_plugins
from webdancer.tools import Tool


def test_first_party_plugins_come_from_entry_points():
    reg = Plugins()
    assert {"openai", "rewards"} <= set(reg.info)
    assert all(reg.info[n].distribution == "webdancer" for n in ("openai", "rewards"))
    assert "openai" in reg.components("policies")
    assert {"format", "answer"} <= set(reg.components("rewards"))


def test_duplicate_name_names_both_plugins(plugins):
    class Another(Tool):
        name = "lookup"
        description = "dup"
        parameters = {"type": "object", "properties": {}}

    class Dup:
        @staticmethod
        @hookimpl
        def register_tools(register):
            register(Another)

    plugins.register(Dup, name="dup-plugin")
    with pytest.raises(PluginError) as err:
        plugins.components("tools")
    assert "'lookup'" in str(err.value) and "test-toolkit" in str(err.value) and "dup-plugin" in str(err.value)


def test_unknown_component_lists_installed(plugins):
    with pytest.raises(PluginError, match=r"no tool named 'nope'.*installed: boom, lookup, mcp, search, slow, visit"):
        plugins.get("tools", "nope")


def test_broken_plugin_is_reported_and_cli_keeps_working(tmp_path, monkeypatch):
    """A real entry point whose module fails to import."""
    dist = tmp_path / "broken_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[webdancer]\nbroken = broken_mod\n")
    (tmp_path / "broken_mod.py").write_text("raise ImportError('needs libfoo')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    set_plugins(None)
    try:
        result = CliRunner().invoke(cli, ["plugins", "--json"])
    finally:
        set_plugins(None)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    broken = [p for p in data["plugins"] if p["name"] == "broken"][0]
    assert broken["error"] == "ImportError: needs libfoo" and broken["distribution"] == "broken-plugin"
    assert any(p["name"] == "openai" and not p["error"] for p in data["plugins"])


def test_plugins_json_lists_hook_kinds(plugins):
    result = CliRunner().invoke(cli, ["plugins", "--json"])
    data = json.loads(result.output)
    assert data["hook_kinds"][:4] == ["tools", "rewards", "synthesizers", "policies"]
    toolkit = [p for p in data["plugins"] if p["name"] == "test-toolkit"][0]
    assert toolkit["registers"]["tools"] == ["lookup", "slow", "boom"]
    table = CliRunner().invoke(cli, ["plugins"])
    assert table.exit_code == 0 and "test-toolkit" in table.output


def test_config_error_exit_code_2(plugins):
    result = CliRunner().invoke(cli, ["config", "show", "agent.max_turn=3"])
    assert result.exit_code == 2
    assert "unknown config key 'agent.max_turn'" in result.output and "max_turns" in result.output
    assert "Traceback" not in result.output


def test_tool_command_calls_registered_tool(plugins):
    result = CliRunner().invoke(cli, ["tool", "lookup", '{"query": ["a", "b"]}'])
    assert result.exit_code == 0 and result.output.strip() == "results for: a | b"
    bad = CliRunner().invoke(cli, ["tool", "lookup", '{"q": 1}'])
    assert bad.exit_code == 2 and "missing required argument 'query'" in bad.output
    missing = CliRunner().invoke(cli, ["tool", "nope", "{}"])
    assert missing.exit_code == 1 and "no tool named 'nope'" in missing.output
