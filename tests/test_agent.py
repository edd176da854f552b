import asyncio

from webdancer.agent import Agent, run_many
from webdancer.config import AgentConfig, ModelConfig
from webdancer.policies import build_policy
from webdancer.records import QAItem, ToolCall
from webdancer.testing.fake_openai import FakeOpenAIServer
from webdancer.tools import ToolBox
from webdancer.wire import render_assistant


def call(name, **args):
    return render_assistant(f"call {name}", tool_call=ToolCall(name, args))


def answer(text):
    return render_assistant("done", answer=text)


def make_agent(plugins, srv, tools=("lookup",), **agent_kw):
    model = ModelConfig(base_url=srv.base_url, model="fake", backoff_s=0.01, max_retries=1)
    policy = build_policy("openai", {}, model, plugins)
    toolbox = ToolBox.from_config(list(tools), {}, agent_kw.pop("tool_timeout_s", 5.0), plugins)
    return Agent(policy, toolbox, AgentConfig(current_date="2026-11-24", **agent_kw))


async def test_search_then_answer(plugins):
    with FakeOpenAIServer([call("lookup", query=["who won 1964 derby"]), answer("Santa Claus")]) as srv:
        steps = []
        traj = await make_agent(plugins, srv).run("Who won?", on_step=steps.append)
    assert traj.termination == "answered" and traj.answer == "Santa Claus"
    assert [s.index for s in steps] == [0, 1]
    assert traj.steps[0].tool_result.content == "results for: who won 1964 derby"
    roles = [m.role for m in traj.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    assert traj.messages[3].content.startswith("<tool_response>\nresults for")
    # The second model call saw the observation.
    second = srv.state.requests[1]["messages"]
    assert second[-1]["content"] == traj.messages[3].content
    assert traj.usage.completion_tokens > 0 and traj.elapsed_s > 0


async def test_malformed_output_becomes_observation_and_rollout_continues(plugins):
    with FakeOpenAIServer(["<think>x</think><tool_call>{bad json</tool_call>", answer("ok")]) as srv:
        traj = await make_agent(plugins, srv).run("q")
    assert traj.termination == "answered"
    assert traj.steps[0].parse_error and "not valid JSON" in traj.steps[0].parse_error
    assert "[format error]" in traj.messages[3].content


async def test_max_turns(plugins):
    with FakeOpenAIServer(default=call("lookup", query=["again"])) as srv:
        traj = await make_agent(plugins, srv, max_turns=3).run("q")
    assert traj.termination == "max_turns" and len(traj.steps) == 3 and traj.answer is None


async def test_tool_timeout_and_tool_exception_are_observations(plugins):
    replies = [call("slow", seconds=5), call("boom"), answer("fine")]
    with FakeOpenAIServer(replies) as srv:
        traj = await make_agent(plugins, srv, tools=("slow", "boom"), tool_timeout_s=0.2).run("q")
    assert traj.termination == "answered"
    assert traj.steps[0].tool_result.error and "timed out after 0.2 s" in traj.steps[0].tool_result.content
    assert traj.steps[1].tool_result.error and "RuntimeError: the tool broke" in traj.steps[1].tool_result.content


async def test_model_outage_ends_rollout_as_an_outage(plugins):
    with FakeOpenAIServer([call("lookup", query=["a"])], default=(503, "down")) as srv:
        traj = await make_agent(plugins, srv).run("q")
    assert traj.termination == "outage" and "HTTP 503" in traj.error and "after 2 tries" in traj.error
    assert len(traj.steps) == 1


async def test_a_refused_request_is_a_model_error_not_an_outage(plugins):
    with FakeOpenAIServer([call("lookup", query=["a"])], default=(400, "prompt too long")) as srv:
        traj = await make_agent(plugins, srv).run("q")
    assert traj.termination == "model_error" and "HTTP 400" in traj.error


async def test_context_budget_truncates_old_observations_never_system(plugins):
    big = ["x" * 4000]
    replies = [call("lookup", query=big), call("lookup", query=big), answer("a")]
    with FakeOpenAIServer(replies) as srv:
        agent = make_agent(plugins, srv, max_context_tokens=3600)
        traj = await agent.run("q")
    assert traj.termination == "answered"
    last_prompt = srv.state.requests[-1]["messages"]
    assert last_prompt[0]["role"] == "system" and last_prompt[0]["content"] == traj.messages[0].content
    assert "removed to fit the context budget" in last_prompt[3]["content"]
    assert "results for" in last_prompt[5]["content"]


async def test_context_overflow_when_prompt_alone_is_too_big(plugins):
    with FakeOpenAIServer([answer("a")]) as srv:
        traj = await make_agent(plugins, srv, max_context_tokens=50).run("q")
    assert traj.termination == "context_overflow" and not srv.state.requests


async def test_many_concurrent_trajectories(plugins):
    def script(request):
        n_obs = sum(1 for m in request["messages"] if m["content"].startswith("<tool_response>"))
        return call("lookup", query=["step"]) if n_obs < 2 else answer("done")

    with FakeOpenAIServer(default=script, latency_s=0.05) as srv:
        agent = make_agent(plugins, srv)
        tasks = [(QAItem(question=f"q{i}", answer="done"), 0) for i in range(32)]
        loop = asyncio.get_running_loop()
        start = loop.time()
        trajs = await run_many(agent, tasks, concurrency=32)
        elapsed = loop.time() - start
    assert len(trajs) == 32 and all(t.termination == "answered" for t in trajs)
    assert {t.question_id for t in trajs} == {t.id for t, _ in tasks}
    assert elapsed < 32 * 3 * 0.05 / 4  # they really overlapped


async def test_run_many_pulls_tasks_lazily_and_keeps_nothing_it_hands_to_on_done(plugins):
    """A sampling run of a million rollouts must hold only those in flight, not a task or a result per rollout."""
    with FakeOpenAIServer(default=answer("done"), latency_s=0.01) as srv:
        agent = make_agent(plugins, srv)
        pulled, finished = [], []

        def tasks():
            for i in range(40):
                pulled.append(i)
                assert len(pulled) - len(finished) <= 4  # never more than `concurrency` taken and unfinished
                yield QAItem(question=f"q{i}", answer="done"), 0

        kept = await run_many(agent, tasks(), concurrency=4, on_done=finished.append)
    assert kept == [] and len(finished) == 40 and len(pulled) == 40
    assert all(t.termination == "answered" for t in finished)


def test_rollout_gc_is_undone_by_the_last_of_overlapping_runs():
    """Two run_many in one event loop overlap without nesting: the young-generation threshold stays raised until the
    last one ends, and then the process's own settings and an unfrozen heap are back."""
    import gc

    from webdancer.agent import rollout_gc

    before = gc.get_threshold()
    first, second = rollout_gc(), rollout_gc()
    first.__enter__()
    assert gc.get_threshold()[0] >= 50_000 and gc.get_freeze_count() > 0
    second.__enter__()
    first.__exit__(None, None, None)
    assert gc.get_threshold()[0] >= 50_000  # the second run is still going
    second.__exit__(None, None, None)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
