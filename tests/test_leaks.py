"""Leak blocking while evaluating: the real search and visit tools on the offline web, through `webdancer eval`."""

import json

import pytest
from click.testing import CliRunner

from webdancer.cli import cli
from webdancer.errors import ConfigError
from webdancer.leaks import BENCHMARK_SOURCES, Blocklist
from webdancer.records import ToolCall
from webdancer.testing.fake_openai import FakeOpenAIServer
from webdancer.wire import render_assistant


def test_patterns_match_domains_globs_and_regexes():
    b = Blocklist(BENCHMARK_SOURCES + ["example.org", "127.0.0.1:8765/foldoc/*", r"re:answers?\.txt$"])
    assert b.match("https://huggingface.co/datasets/gaia-benchmark/GAIA/resolve/main/2023/validation/metadata.jsonl")
    assert b.match("https://github.com/openai/simple-evals/blob/main/browsecomp_eval.py")
    assert b.match("http://docs.example.org/x") == "example.org" and b.match("https://notexample.org/") is None
    assert b.match("http://127.0.0.1:8765/foldoc/python.html") and b.match("http://127.0.0.1:9999/foldoc/python.html") is None
    assert b.match("http://x.com/answers.txt") and b.match("https://huggingface.co/datasets/other/GAIA") is None
    assert b.blocks("http://sub.example.org/", "visits") and not b.blocks("http://a.com/", "visits") and b.counts == {"visits": 1}
    with pytest.raises(ConfigError, match=r"eval.blocklist: 're:\(' is not a valid regular expression"):
        Blocklist(["re:("], "eval.blocklist")


def agent_that_looks_everywhere(request):
    """Searches, then visits the first FOLDOC page it knows of, then answers with what it saw."""
    messages = request["messages"]
    turns = sum(m["role"] == "assistant" for m in messages)
    if turns == 0:
        return render_assistant("Search first.", tool_call=ToolCall("search", {"query": ["python programming language"]}))
    if turns == 1:
        url = f"{agent_that_looks_everywhere.base}/foldoc/python.html"
        return render_assistant("Read it.", tool_call=ToolCall("visit", {"url": [url], "goal": "who made Python"}))
    return render_assistant("Done.", answer="Guido van Rossum")


def test_eval_drops_blocked_results_refuses_blocked_visits_and_reports_counts(plugins, local_web, tmp_path):
    web, _, _ = local_web
    agent_that_looks_everywhere.base = web.base_url
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"id": "q1", "question": "Who created the Python programming language?", "answer": "Guido van Rossum"}) + "\n")

    def evaluate(name, *extra):
        with FakeOpenAIServer(default=agent_that_looks_everywhere) as srv:
            result = CliRunner().invoke(cli, [
                "eval", "run", str(qa), "--name", name, f"run.root={tmp_path}", "run.name=t", f"model.base_url={srv.base_url}",
                "model.model=m", f"web.root={web.root}", f"web.port={web.port}", "tools.visit.cache_dir=null", "agent.max_turns=3", *extra])
        assert result.exit_code == 0, result.output
        trajectory = json.loads((tmp_path / "t" / "eval" / name / "trajectories.jsonl").read_text().splitlines()[0])
        observations = [s["tool_result"]["content"] for s in trajectory["steps"] if s.get("tool_result")]
        return observations, json.loads((tmp_path / "t" / "eval" / name / "results.json").read_text())

    foldoc = f"127.0.0.1:{web.port}/foldoc/*"
    (open_search, open_visit), open_results = evaluate("open", "eval.blocklist=[]")
    assert "/foldoc/" in open_search and "Guido" in open_visit and open_results["blocked"] == {"search_results": 0, "visits": 0}
    (search, visit), blocked_results = evaluate("blocked", f"eval.blocklist=['{foldoc}']")
    assert "/foldoc/" not in search and "/python/" in search and "is blocked during this evaluation" in visit
    # Spare results are asked for and cut back, so the agent still sees top_k results.
    assert search.count("](http") == open_search.count("](http") == 10
    blocked = blocked_results["blocked"]
    assert blocked["visits"] == 1 and blocked["search_results"] >= 1
    report = (tmp_path / "t" / "eval" / "blocked" / "report.md").read_text()
    assert f"{blocked['search_results']} search results dropped, 1 visits refused" in report


def test_a_bad_pattern_stops_the_eval_before_any_rollout(plugins, tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"id": "q1", "question": "Q?", "answer": "A"}) + "\n")
    with FakeOpenAIServer(default="x") as srv:
        result = CliRunner().invoke(cli, ["eval", "run", str(qa), f"run.root={tmp_path}", f"model.base_url={srv.base_url}", "eval.blocklist=['re:[']"])
        assert result.exit_code == 2 and "eval.blocklist: 're:[' is not a valid regular expression" in result.output
        assert srv.state.requests == []
