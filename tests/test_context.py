"""Context policies (`agent.context`): what each prompt keeps of the conversation, chosen by config like every other
component kind, checked before the model sees it, and pluggable by `pip install` alone."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from webdancer.agent import Agent
from webdancer.config import AgentConfig, ModelConfig
from webdancer.config_loader import load_config
from webdancer.context import ContextPolicy, KeepLastK, KeepLastKConfig
from webdancer.errors import ConfigError
from webdancer.jsonl import read_records
from webdancer.policies import build_policy
from webdancer.records import ToolCall, Trajectory
from webdancer.testing.fake_openai import FakeOpenAIServer
from webdancer.tools import ToolBox
from webdancer.wire import render_assistant, unwrap_tool_response

PACKAGE = Path(__file__).resolve().parent / "packages" / "webdancer-context-newest"
BLANKED = "[earlier observation removed to fit the context budget]"


def call(query):
    return render_assistant(f"look up {query}", tool_call=ToolCall("lookup", {"query": [query]}))


def agent(plugins, srv, context=None, **config):
    model = ModelConfig(base_url=srv.base_url, model="fake", backoff_s=0.01, max_retries=1)
    toolbox = ToolBox.from_config(["lookup"], {}, 5.0, plugins)
    return Agent(build_policy("openai", {}, model, plugins), toolbox, AgentConfig(current_date="2026-12-07", **config), context)


def observations(request):
    return [unwrap_tool_response(m["content"]) for m in request["messages"][2:] if m["role"] == "user"]


async def test_keep_last_k_keeps_every_model_turn_and_only_the_newest_k_results(plugins):
    replies = [call("one"), call("two"), call("three"), render_assistant("done", answer="3")]
    with FakeOpenAIServer(replies) as srv:
        traj = await agent(plugins, srv, KeepLastK(KeepLastKConfig(k=1))).run("Count to three?")
    assert traj.termination == "answered"
    last = srv.state.requests[3]
    assert observations(last) == [BLANKED, BLANKED, "results for: three"]
    assert [m["content"] for m in last["messages"] if m["role"] == "assistant"] == [m.content for m in traj.messages if m.role == "assistant"][:3]
    assert observations(srv.state.requests[1]) == ["results for: one"]  # within k: nothing blanked


async def test_the_default_blanks_only_what_the_budget_needs(plugins):
    replies = [call("one"), call("two"), call("three"), render_assistant("done", answer="3")]
    with FakeOpenAIServer(replies) as srv:
        traj = await agent(plugins, srv).run("Count to three?")
    assert traj.termination == "answered" and all(BLANKED not in m["content"] for r in srv.state.requests for m in r["messages"])


class DropsTheQuestion(ContextPolicy):
    name = "drops_the_question"

    async def fit(self, messages, budget):
        return messages[:1] + messages[2:]


class Raises(ContextPolicy):
    name = "raises"

    async def fit(self, messages, budget):
        raise KeyError("oops")


class IgnoresTheBudget(ContextPolicy):
    name = "ignores_the_budget"

    async def fit(self, messages, budget):
        return messages


@pytest.mark.parametrize("policy, error", [
    (DropsTheQuestion(), "context policy 'drops_the_question' dropped or changed the question"),
    (Raises(), "context policy 'raises' failed: KeyError: 'oops'"),
    (IgnoresTheBudget(), "context policy 'ignores_the_budget' returned"),
])
async def test_a_policy_that_breaks_the_rules_ends_the_rollout_as_policy_error_naming_it(plugins, policy, error):
    budget = {"max_context_tokens": 400} if policy.name == "ignores_the_budget" else {}
    with FakeOpenAIServer(default=call("x" * 2000)) as srv:
        traj = await agent(plugins, srv, policy, **budget).run("q?")
    assert traj.termination == "policy_error" and traj.error.startswith(error), traj.error
    assert len(srv.state.requests) <= 1  # the broken prompt never reached the model


def test_the_policy_and_its_options_come_from_config_and_typos_are_refused(plugins, tmp_path):
    from webdancer.context import build_context_policy

    cfg = load_config(None, [f"run.root={tmp_path}", "agent.context=keep_last_k", "context.keep_last_k.k=5"])
    built = build_context_policy(cfg)
    assert isinstance(built, KeepLastK) and built.config.k == 5
    with pytest.raises(ConfigError, match="'agent.context': no context policy named 'keep_last'.*keep_last_k"):
        load_config(None, ["agent.context=keep_last"])
    with pytest.raises(ConfigError, match="context.keep_last_k"):
        load_config(None, ["context.keep_last_k.kk=2"])
    with pytest.raises(ConfigError, match="'context.keep_last': no context policy"):
        load_config(None, ["context.keep_last.k=2"])


def test_a_third_party_context_policy_works_by_pip_install_alone(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(PACKAGE)], check=True,
                   capture_output=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(target), os.environ.get("PYTHONPATH", "")) if p))
    listed = subprocess.run([sys.executable, "-m", "webdancer.cli", "plugins", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert '"newest_exchange"' in listed.stdout, listed.stderr
    replies = [call("one"), call("two"), render_assistant("done", answer="2")]
    out_file = tmp_path / "traj.jsonl"
    with FakeOpenAIServer(replies) as srv:
        run = subprocess.run([sys.executable, "-m", "webdancer.cli", "run", "Count to two?", f"model.base_url={srv.base_url}", "model.model=m",
                              "agent.tools=[]", f"run.root={tmp_path}", "agent.context=newest_exchange", "--out", str(out_file)],
                             env=env, capture_output=True, text=True, timeout=120)
        prompts = [len(r["messages"]) for r in srv.state.requests]
    assert run.returncode == 0, run.stdout + run.stderr
    assert prompts == [2, 4, 4]  # system + question, then only the newest exchange
    (traj,) = read_records(out_file, Trajectory)
    assert len(traj.messages) == 7  # the trajectory keeps the whole conversation


def rollout_and_summarizer(replies, summaries):
    """One fake endpoint for both: the summarizer's requests (its prompt alone) get `summaries`, the rollout's `replies`."""
    replies, summaries = list(replies), list(summaries)

    def reply(request):
        first = request["messages"][0]["content"]
        return summaries.pop(0) if first.startswith("You are helping a web research agent") else replies.pop(0)

    return reply


def summarizer_requests(srv):
    return [r["messages"][0]["content"] for r in srv.state.requests if r["messages"][0]["content"].startswith("You are helping")]


async def test_summarize_restarts_from_a_summary_when_the_prompt_passes_its_threshold(plugins):
    from webdancer_context.summarize import SUMMARY_HEADING, Summarize, SummarizeConfig

    queries = [f"{word} " + "x" * 500 for word in ("alpha", "beta", "gamma", "delta")]
    script = rollout_and_summarizer([call(q) for q in queries] + [render_assistant("done", answer="4")], ["S1: alpha and beta", "S2: all four"])
    policy = Summarize(SummarizeConfig(threshold=0.5))
    with FakeOpenAIServer(default=script) as srv:
        traj = await agent(plugins, srv, policy, max_context_tokens=2000).run("Count to four?")
        await policy.aclose()
        model_prompts = [r["messages"] for r in srv.state.requests if not r["messages"][0]["content"].startswith("You are helping")]
        asked = summarizer_requests(srv)
    assert traj.termination == "answered" and len(traj.messages) == 11  # the trajectory keeps the whole conversation
    assert [(s.step, s.start, s.summary) for s in traj.segments] == [(2, 6, "S1: alpha and beta"), (4, 10, "S2: all four")]
    assert all(s.prompt_tokens > 1000 for s in traj.segments)  # each summary came once the prompt passed 0.5 x 2000
    assert [len(p) for p in model_prompts] == [2, 4, 3, 5, 3]
    assert model_prompts[2][2]["content"] == f"{SUMMARY_HEADING}\nS1: alpha and beta" and model_prompts[2][:2] == model_prompts[0]
    assert model_prompts[3][4]["content"].startswith("<tool_response>\nresults for: gamma")
    # The first summary reads the first segment's turns; the second folds the first summary into the newer turns.
    assert "alpha" in asked[0] and "beta" in asked[0] and "(none yet)" in asked[0] and "gamma" not in asked[0]
    assert "S1: alpha and beta" in asked[1] and "gamma" in asked[1] and "delta" in asked[1] and "alpha x" not in asked[1]
    assert "Count to four?" in asked[0]


async def test_a_summarizer_that_is_down_is_an_outage_and_bad_options_are_refused(plugins, tmp_path):
    from webdancer_context.summarize import Summarize, SummarizeConfig

    from webdancer.errors import ConfigError

    dead = {"base_url": "http://127.0.0.1:9/v1", "max_retries": 0}
    policy = Summarize(SummarizeConfig(threshold=0.3, model=dead))
    with FakeOpenAIServer(default=call("y" * 1600)) as srv:
        traj = await agent(plugins, srv, policy, max_context_tokens=2000).run("q?")
        await policy.aclose()
    assert traj.termination == "outage" and "127.0.0.1:9" in traj.error  # never a policy_error, never a result
    with pytest.raises(ConfigError, match="threshold"):
        Summarize(SummarizeConfig(threshold=0))
    with pytest.raises(ConfigError, match="unknown model option.*base_ur"):
        Summarize(SummarizeConfig(model={"base_ur": "x"}))
    prompt = tmp_path / "p.txt"
    prompt.write_text("Summarize {evidence}")
    with pytest.raises(ConfigError, match=r"p.txt: the prompt needs the placeholders \{question\}"):
        Summarize(SummarizeConfig(prompt_file=str(prompt)))
