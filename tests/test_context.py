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

    def fit(self, messages, budget):
        return messages[:1] + messages[2:]


class Raises(ContextPolicy):
    name = "raises"

    def fit(self, messages, budget):
        raise KeyError("oops")


class IgnoresTheBudget(ContextPolicy):
    name = "ignores_the_budget"

    def fit(self, messages, budget):
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
