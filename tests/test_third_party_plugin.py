"""The example plugin package works by `pip install` alone: listed, callable, used by the agent."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from webdancer.jsonl import read_records
from webdancer.records import Trajectory
from webdancer.testing.fake_openai import FakeOpenAIServer

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "webdancer-plugin-calculator"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(EXAMPLE)],
        check=True,
        capture_output=True,
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(target), os.environ.get("PYTHONPATH", "")) if p))
    return env


def webdancer(env, *args):
    return subprocess.run([sys.executable, "-m", "webdancer.cli", *args], env=env, capture_output=True, text=True, timeout=120)


def test_listed_after_pip_install(installed):
    out = webdancer(installed, "plugins", "--json")
    assert out.returncode == 0, out.stderr
    plugins = {p["name"]: p for p in json.loads(out.stdout)["plugins"]}
    calc = plugins["calculator"]
    assert calc["distribution"] == "webdancer-plugin-calculator" and calc["registers"]["tools"] == ["calculator"]
    assert calc["error"] is None


def test_tool_command_runs_it(installed):
    out = webdancer(installed, "tool", "calculator", '{"expression": "(1964 - 1888) * 2"}')
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(1964 - 1888) * 2 = 152"


def test_agent_calls_it(installed, tmp_path):
    def script(request):
        last = request["messages"][-1]["content"]
        if last.startswith("<tool_response>"):
            value = last.split("=")[-1].split("<")[0].strip()
            return f"<think>the tool says {value}</think>\n<answer>{value}</answer>"
        call = {"name": "calculator", "arguments": {"expression": "6 * 7"}}
        return f"<think>multiply</think>\n<tool_call>\n{json.dumps(call)}\n</tool_call>"

    cfg = tmp_path / "calc.yaml"
    cfg.write_text("agent:\n  tools: [calculator]\n  max_turns: 4\n")
    out_file = tmp_path / "traj.jsonl"
    with FakeOpenAIServer(default=script) as srv:
        out = webdancer(installed, "run", "-c", str(cfg), "What is six times seven?", f"model.base_url={srv.base_url}", "--out", str(out_file))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "answer: 42" in out.stdout
    (traj,) = read_records(out_file, Trajectory)
    assert traj.steps[0].tool_call.name == "calculator"
    assert traj.steps[0].tool_result.content == "6 * 7 = 42" and traj.answer == "42"
    assert [t["name"] for t in traj.tools] == ["calculator"]
