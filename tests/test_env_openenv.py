"""`webdancer env serve`: our environment behind openenv-core's own server, driven by OpenEnv's own client over its
WebSocket sessions, on the offline web."""

import asyncio
import json
import threading
import time

import pytest

from webdancer.config_loader import load_config
from webdancer.records import ToolCall
from webdancer.wire import render_assistant

pytest.importorskip("openenv.core", reason="openenv-core is part of the test extra (scripts/setup.sh installs it)")
from openenv.core import GenericEnvClient  # noqa: E402
from webdancer_env.openenv_server import build_app  # noqa: E402


class Served:
    """build_app on uvicorn in a thread, on a free port."""

    def __init__(self, app):
        import uvicorn
        from conftest import free_port

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.server.started, "the OpenEnv server did not start"
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


def serve(local_web, tmp_path, max_sessions=4, idle_timeout_s=30.0):
    web, _, _ = local_web
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"id": f"q{i}", "question": q, "answer": a}) + "\n" for i, (q, a) in enumerate([
        ("Who invented the integrated circuit in 1958 at Texas Instruments?", "Jack Kilby"),
        ("In which year did Guido van Rossum start Python?", "1989")])))
    cfg = load_config(None, [f"run.root={tmp_path}", f"web.root={web.root}", f"web.port={web.port}", "tools.visit.cache_dir=null",
                             "agent.current_date=2026-11-24", "agent.max_turns=3", "tools.search.top_k=2"])
    return Served(build_app(cfg, qa, max_sessions=max_sessions, idle_timeout_s=idle_timeout_s))


@pytest.fixture
def served(local_web, tmp_path):
    with serve(local_web, tmp_path) as url:
        yield url


def search(query):
    return {"text": render_assistant("I should search", tool_call=ToolCall("search", {"query": [query]}))}


def answer(text):
    return {"text": render_assistant("found it", answer=text)}


async def test_openenvs_client_plays_a_whole_episode_against_the_offline_web(served):
    async with GenericEnvClient(base_url=served) as env:
        opened = await env.reset(index=0)
        system, user = opened.observation["messages"]
        assert system["role"] == "system" and "integrated circuit" in user["content"] and '"name": "search"' in user["content"]
        assert opened.done is False and opened.reward is None
        looked = await env.step(search("integrated circuit Texas Instruments"))
        [observation] = looked.observation["messages"]
        assert observation["role"] == "user" and observation["content"].startswith("<tool_response>") and "http://127.0.0.1" in observation["content"]
        assert looked.done is False
        malformed = await env.step({"text": "<think>hmm</think><tool_call>{not json</tool_call>"})
        assert malformed.observation["messages"][0]["content"].startswith("<tool_response>\n[format error]") and not malformed.done
        state = await env.state()
        assert state["step_count"] == 2 and state["question_id"] == "q0" and state["termination"] is None
        ended = await env.step(answer("Jack Kilby"))
        # The paper's weights (format 0.1, answer 0.9), scored on the trajectory as the filter scores it: one malformed
        # turn on the way costs the format part.
        assert ended.done is True and ended.reward == pytest.approx(0.9) and ended.observation["answer"] == "Jack Kilby"
        assert ended.observation["termination"] == "answered" and ended.observation["reward_parts"] == {"format": 0.0, "answer": 1.0}


async def test_sessions_are_isolated_and_max_turns_ends_an_episode(served):
    async with GenericEnvClient(base_url=served) as one, GenericEnvClient(base_url=served) as two:
        first, second = await asyncio.gather(one.reset(index=0), two.reset(question="What does FOLDOC stand for?", answer="Free On-line Dictionary of Computing"))
        assert "integrated circuit" in first.observation["messages"][1]["content"] and "FOLDOC" in second.observation["messages"][1]["content"]
        await asyncio.gather(one.step(search("Kilby")), two.step(search("FOLDOC")))
        wrong, _ = await asyncio.gather(one.step(answer("Robert Noyce")), two.step(search("dictionary")))
        assert wrong.done and wrong.reward == pytest.approx(0.1)  # well formed, wrong
        third = await two.step(search("computing"))  # agent.max_turns=3
        assert third.done and third.observation["termination"] == "max_turns" and third.reward == 0.0
        assert (await two.state())["step_count"] == 3 and (await one.state())["step_count"] == 2
        again = await one.reset(seed=7)  # a new episode in the same session
        assert again.done is False and (await one.state())["step_count"] == 0


async def test_a_session_idle_past_the_timeout_is_closed_and_its_place_freed(local_web, tmp_path):
    from websockets.exceptions import ConnectionClosed

    with serve(local_web, tmp_path, max_sessions=1, idle_timeout_s=1.0) as url:
        idle = GenericEnvClient(base_url=url)
        await idle.reset(index=1)
        with pytest.raises((ConnectionClosed, RuntimeError)) as refused:  # the one place is taken
            async with GenericEnvClient(base_url=url) as other:
                await other.reset(index=0)
        assert isinstance(refused.value, ConnectionClosed) or "capacity" in str(refused.value)
        deadline = time.monotonic() + 20  # openenv-core's reaper looks every 5 s
        while True:
            await asyncio.sleep(1.0)
            try:
                async with GenericEnvClient(base_url=url) as other:
                    assert (await other.reset(index=0)).done is False
                break
            except (ConnectionClosed, RuntimeError):
                assert time.monotonic() < deadline, "the idle session was never closed"
        await idle.close()


def test_a_tool_or_reward_that_is_not_installed_fails_when_the_server_is_built(local_web, tmp_path):
    from webdancer.errors import WebdancerError

    web, _, _ = local_web
    base = [f"run.root={tmp_path}", f"web.root={web.root}", f"web.port={web.port}"]
    with pytest.raises(WebdancerError, match="browse"):
        build_app(load_config(None, [*base, "agent.tools=[search, browse]"]))
    with pytest.raises(WebdancerError, match="karma"):
        build_app(load_config(None, [*base, "rewards={karma: {weight: 1.0}}"]))
