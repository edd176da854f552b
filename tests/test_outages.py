"""An outage is never a result: rollouts it ends are kept apart, never scored, and a rerun runs them again."""

import json
import socket
import time

from click.testing import CliRunner
from test_eval import GAIA, scripted_model
from webfakes import FakeSerper

from webdancer.agent import Agent
from webdancer.cli import cli
from webdancer.config import AgentConfig, ModelConfig
from webdancer.policies import build_policy
from webdancer.records import ToolCall
from webdancer.testing.fake_openai import FakeOpenAIServer
from webdancer.testing.model_process import ModelProcess
from webdancer.tools import ToolBox
from webdancer.wire import render_assistant


def closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


async def search_once_then_answer(plugins, monkeypatch, serper, max_retries):
    """The agent with only Serper's `search`: the model searches once, then answers."""
    replies = [render_assistant("search", tool_call=ToolCall("search", {"query": ["derby"]})), render_assistant("ok", answer="x")]
    with FakeOpenAIServer(replies) as srv:
        monkeypatch.setenv("SERPER_API_KEY", serper.key)
        options = {"search": {"backend": "serper", "serper_url": serper.url + "/search", "backoff_s": 0.01, "max_retries": max_retries}}
        policy = build_policy("openai", {}, ModelConfig(base_url=srv.base_url, model="m", backoff_s=0.01), plugins)
        async with ToolBox.from_config(["search"], options, 30.0, plugins) as toolbox:
            traj = await Agent(policy, toolbox, AgentConfig()).run("Who won the 1964 Derby?")
        await policy.aclose()
    return traj


async def test_a_search_backend_outage_ends_the_rollout_without_an_observation(plugins, monkeypatch):
    with FakeSerper(statuses=[500] * 4) as serper:
        traj = await search_once_then_answer(plugins, monkeypatch, serper, max_retries=1)
    assert traj.termination == "outage" and "serper search failed after 2 tries (HTTP 500)" in traj.error
    assert traj.steps[0].tool_result is None  # the model never saw the failure as an observation
    assert len(serper.requests) == 2


def qa_file(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Question {i}?", "answer": "yes"}) + "\n" for i in range(3)))
    return path


def sample_args(tmp_path, base_url, *extra):
    return ["sample", str(qa_file(tmp_path)), f"run.root={tmp_path}", "run.name=t", f"model.base_url={base_url}", "model.model=m",
            "model.max_retries=1", "model.backoff_s=0.01", "agent.tools=[lookup]", "--n", "2", *extra]


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_sample_against_a_down_endpoint_records_outages_apart_and_a_rerun_runs_them(plugins, tmp_path):
    out = tmp_path / "t" / "trajectories_openai.jsonl"
    outages = tmp_path / "t" / "trajectories_openai.outages.jsonl"
    down = CliRunner().invoke(cli, sample_args(tmp_path, f"http://127.0.0.1:{closed_port()}/v1", "infra.max_outage_s=0.5"))
    assert down.exit_code == 1, down.output
    assert "6 rollout(s) ended because an endpoint or backend was down" in down.output and "ConnectError" in down.output
    assert "Traceback" not in down.output
    assert lines(out) == []  # nothing that any filter, score or RL batch reads
    assert sorted(r["id"] for r in lines(outages)) == sorted(f"q{i}:{s}" for i in range(3) for s in range(2))
    assert {r["termination"] for r in lines(outages)} == {"outage"}

    kept = CliRunner().invoke(cli, sample_args(tmp_path, f"http://127.0.0.1:{closed_port()}/v1", "--keep-failed"))
    assert kept.exit_code == 0 and "0 new trajectories (6 already there)" in kept.output

    with FakeOpenAIServer(default=render_assistant("sure", answer="yes")) as srv:
        back = CliRunner().invoke(cli, sample_args(tmp_path, srv.base_url))
    assert back.exit_code == 0, back.output
    assert "6 new trajectories (0 already there)" in back.output and len(srv.state.requests) == 6
    assert len(lines(out)) == 6 and {r["termination"] for r in lines(out)} == {"answered"}
    assert len(lines(outages)) == 6  # the record of what happened stays


def flaky_on_python(request):
    """The scripted eval model, but its endpoint is overloaded whenever the question is about Python."""
    if "Python" in request["messages"][1]["content"]:
        return (503, "overloaded")
    return scripted_model(request)


def test_eval_never_counts_an_outage_as_wrong_and_says_the_run_is_incomplete(plugins, tmp_path):
    args = ["eval", "run", str(GAIA), f"run.root={tmp_path}", "run.name=t", "model.model=m", "model.max_retries=1",
            "model.backoff_s=0.01", "agent.tools=[lookup]", "agent.max_turns=3", "agent.concurrency=1",
            "eval.attachments=ask", "--k", "2", "--name", "e"]
    out = tmp_path / "t" / "eval" / "e"
    scripted_model.xilinx = 0
    with FakeOpenAIServer(default=flaky_on_python) as srv:
        result = CliRunner().invoke(cli, [*args, f"model.base_url={srv.base_url}"])
    assert result.exit_code == 1 and "2 planned run(s) are missing (2 ended by an outage" in result.output
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] is False and results["incomplete_runs"] == 2 and results["outages"] == 2
    overall = results["overall"]
    # Kilby 2/2, Xilinx 1/2; the Python question's runs are missing, not wrong.
    assert overall["questions"] == 2 and overall["trajectories"] == 4
    assert overall["pass_at_1"] == 0.75 and "outage" not in overall["failures"]
    assert "**Incomplete:** 2 of the planned runs are missing" in (out / "report.md").read_text()

    with FakeOpenAIServer(default=scripted_model) as srv:
        again = CliRunner().invoke(cli, [*args, f"model.base_url={srv.base_url}"])
    assert again.exit_code == 0, again.output
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] is True and results["overall"]["questions"] == 3 and results["overall"]["trajectories"] == 6
    assert results["overall"]["pass_at_1"] == 0.5
    assert all(len(r["messages"]) > 1 for r in lines(out / "trajectories.jsonl"))


FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit, writes fail with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
sys.argv = ["webdancer", *sys.argv[2:]]
from webdancer.cli import main
main()
"""


def test_a_full_disk_is_one_clear_error_and_a_rerun_continues_from_the_last_complete_record(plugins, tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "t" / "trajectories_openai.jsonl"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with FakeOpenAIServer(default=render_assistant("sure", answer="yes")) as srv:
        args = sample_args(tmp_path, srv.base_url, "agent.concurrency=1", "agent.tools=[]")  # a process without the test tools
        # Room for some trajectories, not all six (each is a few KB with the system prompt).
        full = subprocess.run([sys.executable, "-c", FULL_DISK, "12000", *args], capture_output=True, text=True, env=env, timeout=120)
        assert full.returncode == 1, full.stdout + full.stderr
        assert "cannot write (File too large)" in full.stderr and "rerun" in full.stderr and "Traceback" not in full.stderr
        kept = lines(out)  # every line a complete record: nothing torn
        assert 0 < len(kept) < 6 and out.read_bytes().endswith(b"\n")

        again = subprocess.run([sys.executable, "-c", FULL_DISK, "10000000", *args], capture_output=True, text=True, env=env, timeout=120)
        assert again.returncode == 0, again.stdout + again.stderr
        assert f"{6 - len(kept)} new trajectories ({len(kept)} already there)" in again.stdout
    ids = [r["id"] for r in lines(out)]
    assert sorted(ids) == sorted(f"q{i}:{s}" for i in range(3) for s in range(2))  # each once


def down_then_up(seconds):
    """An endpoint that answers 503 for `seconds` from its first request, then answers every question."""
    state = {"start": None, "failed": 0}

    def reply(request):
        state["start"] = state["start"] or time.monotonic()
        if time.monotonic() - state["start"] < seconds:
            state["failed"] += 1
            return (503, "restarting")
        return render_assistant("sure", answer="yes")

    return reply, state


def test_an_endpoint_that_keeps_failing_pauses_every_rollout_until_it_answers(plugins, tmp_path):
    reply, state = down_then_up(1.5)
    with FakeOpenAIServer(default=reply) as srv:
        result = CliRunner().invoke(cli, sample_args(tmp_path, srv.base_url, "infra.breaker_failures=3", "infra.probe_min_s=0.2"))
    assert result.exit_code == 0, result.output
    assert "6 new trajectories" in result.output and not (tmp_path / "t" / "trajectories_openai.outages.jsonl").exists()
    # Paused, not hammering: the failures that opened it, those already in flight, and a few probes.
    assert 3 <= state["failed"] <= 12


def test_an_outage_longer_than_max_outage_s_stops_the_run_cleanly(plugins, tmp_path):
    with FakeOpenAIServer(default=(503, "down for maintenance")) as srv:
        started = time.monotonic()
        result = CliRunner().invoke(cli, sample_args(tmp_path, srv.base_url, "infra.breaker_failures=2", "infra.max_outage_s=1",
                                                     "infra.probe_min_s=0.3", "model.max_retries=10"))
        elapsed = time.monotonic() - started
        requests = len(srv.state.requests)
    assert result.exit_code == 1 and "has been down for" in result.output and "infra.max_outage_s=1" in result.output
    assert "6 rollout(s) ended" in result.output and elapsed < 15
    assert requests < 20  # 6 rollouts x 11 tries each without the breaker


class KilledAndRestarted:
    """The fake model in its own process, SIGKILLed `after_s` into the block and restarted `down_s` later."""

    def __init__(self, after_s=0.8, down_s=1.5):
        import threading

        from conftest import free_port

        self.model = ModelProcess(free_port(), tool="lookup", latency_s=0.2)  # runs last ~3 s: the kill lands mid-run
        self.after_s, self.down_s = after_s, down_s
        self.killed_at = None
        self.thread = threading.Thread(target=self._chaos, daemon=True)

    def _chaos(self):
        time.sleep(self.after_s)
        self.model.kill()
        self.killed_at = time.monotonic()
        time.sleep(self.down_s)
        self.model.start()

    @property
    def base_url(self):
        return self.model.base_url

    def __enter__(self):
        self.model.start()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.thread.join(30)
        self.model.kill()


def test_a_killed_model_server_restarts_on_its_port_while_its_old_connections_linger():
    """The kill leaves the server's side of each kept-alive connection in TIME_WAIT: binding again needs SO_REUSEADDR."""
    import http.client

    from conftest import free_port

    model = ModelProcess(free_port())
    model.start()
    try:
        connections = [http.client.HTTPConnection("127.0.0.1", model.port, timeout=10) for _ in range(3)]
        for connection in connections:
            connection.request("GET", "/v1/models")
            connection.getresponse().read()
        model.kill()
        for connection in connections:
            connection.close()
        model.start()  # raised "did not start" while the fake bound without SO_REUSEADDR
        again = http.client.HTTPConnection("127.0.0.1", model.port, timeout=10)
        body = {"model": "m", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "Which word is alpha?"}]}
        again.request("POST", "/v1/chat/completions", json.dumps(body), {"content-type": "application/json"})
        reply = again.getresponse()
        assert reply.status == 200 and "search" in reply.read().decode()  # its first turn calls the tool
    finally:
        model.kill()


def test_sample_and_eval_survive_a_model_server_killed_and_restarted(plugins, tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Which word is {w}?", "answer": w}) + "\n"
                          for i, w in enumerate(["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"])))
    resilient = ["model.max_retries=2", "model.backoff_s=0.05", "infra.breaker_failures=3", "infra.probe_min_s=0.2",
                 "infra.max_outage_s=60", "agent.tools=[lookup]", "agent.concurrency=4", f"run.root={tmp_path}", "model.model=m"]
    with KilledAndRestarted() as server:
        started = time.monotonic()
        sampled = CliRunner().invoke(cli, ["sample", str(qa), "run.name=s", f"model.base_url={server.base_url}", "--n", "3", *resilient])
        finished = time.monotonic()
    assert sampled.exit_code == 0, sampled.output
    assert server.killed_at is not None and started < server.killed_at < finished  # the kill hit the run
    out = lines(tmp_path / "s" / "trajectories_openai.jsonl")
    assert sorted(r["id"] for r in out) == sorted(f"q{i}:{s}" for i in range(8) for s in range(3))  # all, once each
    assert {r["termination"] for r in out} == {"answered"} and all(r["answer"] == r["reference_answer"] for r in out)
    assert not (tmp_path / "s" / "trajectories_openai.outages.jsonl").exists()

    with KilledAndRestarted() as server:
        evaluated = CliRunner().invoke(cli, ["eval", "run", str(qa), "run.name=e", f"model.base_url={server.base_url}", "--k", "3",
                                             "--name", "faulty", *resilient])
    assert evaluated.exit_code == 0, evaluated.output
    results = json.loads((tmp_path / "e" / "eval" / "faulty" / "results.json").read_text())
    # The same scores as a fault-free run: this model is right on every question.
    assert results["complete"] is True and results["overall"]["trajectories"] == 24 and results["overall"]["pass_at_1"] == 1.0


async def test_a_search_backend_rate_limiting_for_a_while_pauses_the_rollout_instead_of_failing_it(plugins, monkeypatch):
    from webdancer.breaker import BREAKERS
    from webdancer.config import InfraConfig

    BREAKERS.configure(InfraConfig(breaker_failures=3, probe_min_s=0.1))
    with FakeSerper(statuses=[429] * 6) as serper:
        # Two retries of its own, then the breaker opens on the third failure and the request waits instead.
        traj = await search_once_then_answer(plugins, monkeypatch, serper, max_retries=2)
    assert traj.termination == "answered" and "found 3 results" in traj.steps[0].tool_result.content
    assert len(serper.requests) == 7  # six 429s (paused after three, then probes), then the answer
