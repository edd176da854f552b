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


def test_a_plugin_brings_its_own_config_section_typed_like_the_cores(plugins, tmp_path):
    from dataclasses import dataclass
    from typing import ClassVar

    from webdancer.config_loader import load_config
    from webdancer.errors import ConfigError

    @dataclass
    class CacheSection:
        name: ClassVar[str] = "cachey"
        size_mb: int = 64
        policy: str = "lru"

    class Cachey:
        @staticmethod
        @hookimpl
        def register_config_sections(register):
            register(CacheSection)

        @staticmethod
        @hookimpl
        def config_loaded(cfg):
            cfg.tools.setdefault("lookup", {})["cache_mb"] = cfg.cachey.size_mb

    plugins.register(Cachey, name="cachey-plugin")
    (tmp_path / "c.yaml").write_text("cachey:\n  size_mb: 8\n")
    cfg = load_config(tmp_path / "c.yaml", ["cachey.policy=fifo"])
    assert (cfg.cachey.size_mb, cfg.cachey.policy) == (8, "fifo") and cfg.tools["lookup"]["cache_mb"] == 8
    assert cfg.serve.port == 8000  # the first-party plugins' sections are there too
    shown = CliRunner().invoke(cli, ["config", "show", "cachey.size_mb=3"])
    assert "cachey:\n  size_mb: 3\n  policy: lru" in shown.output
    with pytest.raises(ConfigError, match="unknown config key 'cachey.sizemb'; closest valid keys: size_mb"):
        load_config(None, ["cachey.sizemb=1"])
    with pytest.raises(ConfigError, match="bad value for 'cachey.size_mb'"):
        load_config(None, ["cachey.size_mb=big"])

    @dataclass
    class Clash:
        name: ClassVar[str] = "agent"

    class Clasher:
        @staticmethod
        @hookimpl
        def register_config_sections(register):
            register(Clash)

    plugins.register(Clasher, name="clash-plugin")
    with pytest.raises(PluginError, match="plugin 'clash-plugin' registers a config section 'agent', which is a section of the core"):
        load_config(None)


def test_a_section_of_a_plugin_not_installed_is_named_not_a_bare_attribute_error():
    from webdancer.config_loader import load_config
    from webdancer.errors import ConfigError

    reg = Plugins(load_entrypoints=False)
    set_plugins(reg)
    try:
        cfg = load_config(None)
    finally:
        set_plugins(None)
    with pytest.raises(AttributeError, match="no 'serve' section: the plugin that declares it is not installed"):
        cfg.serve  # noqa: B018
    set_plugins(reg)
    try:
        with pytest.raises(ConfigError, match="unknown config key 'serve'.*a plugin's section is there only when that plugin is installed"):
            load_config(None, ["serve.port=8001"])
    finally:
        set_plugins(None)


def test_a_loaded_config_pickles_and_copies_with_its_plugin_sections(plugins):
    import copy
    import pickle

    from webdancer.config_loader import load_config

    cfg = load_config(None, ["serve.port=8123", "web.port=9999"])
    for again in (pickle.loads(pickle.dumps(cfg)), copy.deepcopy(cfg)):
        assert type(again) is type(cfg) and again == cfg and again.serve.port == 8123 and again.tools["visit"]["local_sites"] == ["127.0.0.1:9999"]
