"""`vf-eval webdancer-verifiers`: our environment as a verifiers environment (plugins/webdancer_verifiers), evaluated by
verifiers' own evaluation command in its own environment (.venvs/verifiers), against the tiny model on loopback."""

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest
from webdancer_models.serve import served_model_name
from webfakes import FakeSerper

from webdancer.config_loader import load_config
from webdancer.environment import Episode
from webdancer.records import QAItem, ToolCall
from webdancer.rewards import RewardSet, reward_input
from webdancer.testing.fake_openai import FakeOpenAIServer
from webdancer.tools import ToolBox
from webdancer.wire import render_assistant

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venvs" / "verifiers"
QUESTIONS = [("q0", "Who invented the integrated circuit in 1958 at Texas Instruments?", "Jack Kilby"),
             ("q1", "In which year did Guido van Rossum start Python?", "1989")]


@pytest.fixture(scope="module")
def vf_eval():
    if not (VENV / "bin" / "vf-eval").is_file():
        pytest.fail("the verifiers environment is missing: bash scripts/setup_verifiers.sh (scripts/test.sh runs it)")

    def run(folder: Path, base_url: str, model: str, *args: str, env: dict = None) -> subprocess.CompletedProcess:
        return vf_eval_command(folder, ["webdancer-verifiers", "-m", model, "--client.base-url", base_url, "--no-push", "--no-rich",
                                        "-o", str(folder / "out"), *args], env)

    return run


def vf_eval_command(folder: Path, args: list[str], env: dict = None) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PATH": f"{VENV / 'bin'}:{os.environ['PATH']}", "OPENAI_API_KEY": "local", **(env or {})}
    return subprocess.run([str(VENV / "bin" / "vf-eval"), *args], cwd=folder, env=environ, capture_output=True, text=True, timeout=600)


def resume(folder: Path, saved: Path, env: dict = None) -> subprocess.CompletedProcess:
    """verifiers' resume: the run's own saved config, its failed episodes run again."""
    return vf_eval_command(folder, ["@", str(saved), "--resume"], env)


def setup_files(folder: Path, local_web, *overrides: str) -> tuple[Path, list[str]]:
    web, _, _ = local_web
    qa = folder / "qa.jsonl"
    qa.write_text("".join(json.dumps({"id": i, "question": q, "answer": a}) + "\n" for i, q, a in QUESTIONS))
    settings = [f"web.root={web.root}", f"web.port={web.port}", "tools.visit.cache_dir=null", "agent.current_date=2026-11-24",
                "agent.max_turns=3", "tools.search.top_k=2", *overrides]
    return qa, settings


def episodes(folder: Path) -> list[dict]:
    [traces] = (folder / "out").glob("*/traces.jsonl")
    return [json.loads(line) for line in traces.read_text().splitlines()]


def conversation(trace: dict) -> list[dict]:
    return [node["message"] for node in trace["nodes"]]


async def replay(settings: list[str], question: QAItem, replies: list[str]) -> tuple[Episode, list[str], float, dict]:
    """Our own Episode and reward set, given the same model turns: the observations and the score they give."""
    cfg = load_config(None, settings)
    observations = []
    rewards = RewardSet.from_config(cfg)
    async with ToolBox.for_run(cfg) as toolbox:
        episode = Episode(toolbox, cfg.agent, question.question, question)
        for reply in replies:
            moved = await episode.step(reply)
            if not moved.done:  # the last turn's observation is never shown
                observations.append(moved.observation)
    scored = await rewards.score(reward_input(episode.trajectory))
    await rewards.aclose()
    return episode, observations, scored.score, rewards.weights


def test_vf_eval_plays_our_episodes_with_the_tiny_model_and_scores_them_with_our_rewards(vf_eval, local_web, tiny_server, tmp_path):
    serve_cfg, server = tiny_server
    qa, settings = setup_files(tmp_path, local_web)
    done = vf_eval(tmp_path, server.base_url, served_model_name(serve_cfg), "--env.taskset.qa", str(qa), "--env.taskset.overrides",
                   json.dumps(settings), "--sampling.temperature", "0", "--sampling.max-tokens", "64", "-c", "2")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = {e["traces"][0]["info"]["webdancer"]["question_id"]: e["traces"][0] for e in episodes(tmp_path)}
    assert sorted(found) == ["q0", "q1"]
    for qid, question, answer in QUESTIONS:
        trace = found[qid]
        assert trace["ok"], trace["errors"]
        messages = conversation(trace)
        replies = [m["content"] for m in messages if m["role"] == "assistant"]
        shown = [m["content"] for m in messages[2:] if m["role"] == "user"]
        episode, observations, score, weights = asyncio.run(replay(settings, QAItem(question=question, answer=answer, id=qid), replies))
        # What the model saw is what our agent would have shown it: the same opening, the same observation per turn.
        assert [m["content"] for m in messages[:2]] == [m.content for m in episode.trajectory.messages[:2]]
        assert '"name": "search"' in messages[1]["content"] and question in messages[1]["content"]
        assert shown == observations and len(replies) == len(episode.trajectory.steps) <= 3
        assert trace["info"]["webdancer"]["termination"] == episode.trajectory.termination
        # Each configured reward on the trace with its weight: verifiers' total is our reward set's score.
        assert {name: r["weight"] for name, r in trace["rewards"].items()} == weights
        assert sum(r["score"] * r["weight"] for r in trace["rewards"].values()) == pytest.approx(score)


def test_a_tool_outage_fails_the_episode_instead_of_scoring_it_and_resume_runs_it_again(vf_eval, local_web, tmp_path):
    def model(request: dict) -> str:
        if request["messages"][-1]["content"].startswith("<tool_response>"):
            return render_assistant("found it", answer="Jack Kilby")
        return render_assistant("search first", tool_call=ToolCall("search", {"query": ["integrated circuit"]}))

    with FakeSerper(statuses=[500, 500]) as serper, FakeOpenAIServer(default=model) as llm:
        qa, settings = setup_files(tmp_path, local_web, "tools.search.backend=serper", f"tools.search.serper_url={serper.url}/search",
                                      "tools.search.max_retries=1", "tools.search.backoff_s=0.01")
        qa.write_text(qa.read_text().splitlines()[0] + "\n")
        args = ["--env.taskset.qa", str(qa), "--env.taskset.overrides", json.dumps(settings)]
        down = vf_eval(tmp_path, llm.base_url, "fake-model", *args, env={"SERPER_API_KEY": serper.key})
        [failed] = episodes(tmp_path)
        assert not failed["ok"] and failed["traces"][0]["rewards"] == {}, failed  # an outage is never a result
        assert "serper search failed after 2 tries (HTTP 500)" in json.dumps(failed["errors"]) + down.stdout + down.stderr
        [saved] = (tmp_path / "out").glob("*/configs/resolved/eval.json")
        again = resume(tmp_path, saved, env={"SERPER_API_KEY": serper.key})
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    finished = [e for e in episodes(tmp_path) if e["ok"]]
    assert len(finished) == 1 and finished[0]["traces"][0]["info"]["webdancer"]["answer"] == "Jack Kilby"
    assert finished[0]["traces"][0]["metrics"]["correct"] == 1.0 and len(serper.requests) == 3


def test_missing_questions_or_an_unknown_tool_fail_at_start_by_name(vf_eval, local_web, tmp_path):
    webdancer = [str(ROOT / ".venv" / "bin" / "webdancer"), "env", "verifiers"]
    no_qa = subprocess.run([*webdancer, "--venv", str(VENV), "-m", "m", "--client.base-url", "http://127.0.0.1:9/v1", "--no-push", "-o",
                            str(tmp_path / "out")], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert no_qa.returncode != 0 and "--env.taskset.qa" in no_qa.stdout + no_qa.stderr
    no_venv = subprocess.run([*webdancer, "--venv", str(tmp_path / "none")], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert no_venv.returncode == 1 and "bash scripts/setup_verifiers.sh" in no_venv.stderr and "Traceback" not in no_venv.stderr
    qa, settings = setup_files(tmp_path, local_web, "agent.tools=[search,nosuchtool]")
    unknown = vf_eval(tmp_path, "http://127.0.0.1:9/v1", "m", "--env.taskset.qa", str(qa), "--env.taskset.overrides", json.dumps(settings))
    assert unknown.returncode != 0 and "nosuchtool" in unknown.stdout + unknown.stderr
