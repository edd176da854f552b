"""Record and replay tool calls: an eval replayed with the web server down gives the same observations and
scores; cached mode calls only what is missing; a store from other tool options is refused before any rollout."""

import asyncio
import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import free_port
from test_leaks import agent_that_looks_everywhere

from webdancer.cli import cli
from webdancer.config_loader import load_config
from webdancer.errors import ConfigError
from webdancer.records import ToolCall
from webdancer.testing.fake_openai import FakeOpenAIServer
from webdancer.tools import ToolBox


def test_an_eval_replayed_with_the_web_down_reproduces_observations_and_scores(plugins, local_web, tmp_path):
    from webdancer_web.server import LocalWebServer

    web, _, _ = local_web
    port = free_port()
    agent_that_looks_everywhere.base = f"http://127.0.0.1:{port}"
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"id": f"q{i}", "question": q, "answer": "Guido van Rossum"}) + "\n"
                          for i, q in enumerate(["Who created Python?", "Who is Python's author?"])))
    store = tmp_path / "store"

    def evaluate(name, mode):
        with FakeOpenAIServer(default=agent_that_looks_everywhere) as srv:
            result = CliRunner().invoke(cli, [
                "eval", "run", str(qa), "--name", name, f"run.root={tmp_path}", "run.name=t", f"model.base_url={srv.base_url}",
                "model.model=m", f"web.root={web.root}", f"web.port={port}", "tools.visit.cache_dir=null", "agent.max_turns=3",
                f"tool_store.mode={mode}", f"tool_store.dir={store}", "tool_store.prices={search: 0.001, visit: 0.002}"])
        assert result.exit_code == 0, result.output
        out = tmp_path / "t" / "eval" / name
        trajectories = sorted((json.loads(line) for line in (out / "trajectories.jsonl").read_text().splitlines()), key=lambda t: t["question_id"])
        observations = [[s["tool_result"]["content"] for s in t["steps"] if s.get("tool_result")] for t in trajectories]
        return observations, json.loads((out / "results.json").read_text())

    with LocalWebServer(Path(web.root), "127.0.0.1", port):
        live, live_results = evaluate("live", "live")
    assert "Guido" in live[0][1] and live_results["tool_store"] == {
        "search": {"calls": 2, "hits": 0, "misses": 2, "replay_misses": 0, "cost": 0.002},
        "visit": {"calls": 2, "hits": 0, "misses": 2, "replay_misses": 0, "cost": 0.004}}
    # The server is down now: a live visit would fail; the replay never calls it.
    replayed, replay_results = evaluate("replayed", "replay")
    assert replayed == live  # byte for byte
    assert replay_results["per_question"] == live_results["per_question"] and replay_results["overall"]["pass_at_1"] == 1.0
    assert {t: (c["hits"], c["misses"], c["cost"]) for t, c in replay_results["tool_store"].items()} == {"search": (2, 0, 0), "visit": (2, 0, 0)}
    assert "tool store, `visit`: 2 calls, 2 served from the store, 0 called live" in (tmp_path / "t" / "eval" / "replayed" / "report.md").read_text()


def box(tmp_path, mode, *extra):
    cfg = load_config(None, [f"tool_store.mode={mode}", f"tool_store.dir={tmp_path / 'store'}", "agent.tools=[lookup]", *extra])
    return ToolBox.for_run(cfg)


def run(toolbox, *queries):
    async def go():
        async with toolbox:
            return [await toolbox.run(ToolCall("lookup", {"query": [q]})) for q in queries]

    return asyncio.run(go())


def test_cached_mode_calls_only_what_is_missing_and_replay_names_a_miss(plugins, tmp_path):
    first = box(tmp_path, "cached")
    run(first, "a", "b", "a")
    assert first.store.summary()["lookup"] == {"calls": 3, "hits": 1, "misses": 2, "replay_misses": 0, "cost": 0.0}
    again = box(tmp_path, "cached")
    results = run(again, "a", "c")
    assert [r.content for r in results] == ["results for: a", "results for: c"] and again.store.summary()["lookup"]["hits"] == 1
    replay = box(tmp_path, "replay")
    hit, miss = run(replay, "c", "d")
    assert hit.content == "results for: c" and miss.error and 'replay: no recorded observation for lookup({"query": ["d"]})' in miss.content
    live = box(tmp_path, "live")  # live calls every time and records, holding no observation in memory
    run(live, "a", "e", "e")
    assert live.store.summary()["lookup"]["misses"] == 3 and live.store.recorded == {}
    assert run(box(tmp_path, "replay"), "e")[0].content == "results for: e"


def test_a_store_from_other_tool_options_or_none_at_all_is_refused_before_any_call(plugins, tmp_path):
    with pytest.raises(ConfigError, match="no recorded calls at .*calls.jsonl; record them first"):
        box(tmp_path, "replay")
    run(box(tmp_path, "cached"), "a")
    from webdancer.tools import Tool

    class Sized(Tool):  # the same tool name recorded with other options: another fingerprint
        name = "lookup"

    from dataclasses import dataclass

    @dataclass
    class Options:
        top_k: int = 5

    Sized.Config = Options
    from webdancer.config import ToolStoreConfig
    from webdancer.toolstore import ToolStore

    with pytest.raises(ConfigError, match=r"has no recordings of tool 'lookup' with options \{'top_k': 5\}; it was recorded with \[\{\}\]"):
        ToolBox({"lookup": Sized()}, store=ToolStore(ToolStoreConfig(mode="replay", dir=str(tmp_path / "store"))))


def test_a_torn_or_corrupt_record_is_skipped_with_a_warning(plugins, tmp_path, caplog):
    run(box(tmp_path, "cached"), "a", "b")
    calls = tmp_path / "store" / "calls.jsonl"
    lines = calls.read_text().splitlines()
    calls.write_text(lines[0] + "\n{not json\n" + lines[1][: len(lines[1]) // 2])  # a bad line, then a torn one
    with caplog.at_level(logging.WARNING):
        replay = box(tmp_path, "replay")
    assert "skipped 2 line(s) that are not complete records" in caplog.text
    a, b = run(replay, "a", "b")
    assert a.content == "results for: a" and b.error  # b's record was torn: not recorded
    cached = box(tmp_path, "cached")
    again, = run(cached, "b")  # called again and appended after the torn line was cut; the bad line stays skipped
    assert again.content == "results for: b" and not again.error
    a, b = run(box(tmp_path, "replay"), "a", "b")
    assert (a.content, b.content) == ("results for: a", "results for: b")
