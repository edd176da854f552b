"""Stage 2: sampling trajectories (expert and the tiny model) and the three-stage filter."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from webdancer.agent import Agent
from webdancer.cli import cli
from webdancer.config import DEFAULT_REWARD_WEIGHTS, AgentConfig, FilterConfig, ModelConfig
from webdancer.config_loader import load_config
from webdancer.filtering import filter_file, quality_problem, validity_problem
from webdancer.jsonl import JsonlAppender, read_records
from webdancer.policies import build_policy
from webdancer.records import Message, QAItem, Step, ToolCall, ToolResult, Trajectory
from webdancer.rewards import RewardSet
from webdancer.sampling import sample
from webdancer.scoring import matches
from webdancer.synth import run_synthesizer
from webdancer.testing.fake_openai import FakeOpenAIServer
from webdancer.tools import ToolBox

STR_LIST = {"type": "array", "items": {"type": "string"}}
TOOLS = [
    {"name": "search", "description": "", "parameters": {"type": "object", "properties": {"query": STR_LIST}, "required": ["query"]}},
    {"name": "visit", "description": "", "parameters": {"type": "object", "properties": {"url": STR_LIST, "goal": {"type": "string"}}, "required": ["url", "goal"]}},
]
CFG = FilterConfig(max_turns=6, max_thought_chars=200)


def paper_rewards() -> RewardSet:
    """The default rewards (format 0.1 + answer 0.9): correct when the answer matches."""
    return RewardSet(DEFAULT_REWARD_WEIGHTS)


def traj(calls=(("search", {"query": ["python inventor"]}, "Python was invented by Guido van Rossum in 1991."),),
         answer="1991", reference="1991", qid="q1", **step_kw):
    steps = []
    for i, (name, args, obs) in enumerate(calls):
        steps.append(Step(i, "raw", thought="look", tool_call=ToolCall(name, args), tool_result=ToolResult(name, obs)))
    if answer is not None:
        steps.append(Step(len(steps), "raw", thought="done", answer=answer))
    for key, value in step_kw.items():
        setattr(steps[0], key, value)
    msgs = [Message("system", "s"), Message("user", "q")] + [Message("assistant", "x")] * len(steps)
    return Trajectory(id=f"{qid}:{len(steps)}", question="When was Python invented?", messages=msgs, steps=steps, answer=answer,
                      termination="answered" if answer is not None else "max_turns", question_id=qid,
                      reference_answer=reference, tools=TOOLS, policy="test")


def test_a_good_trajectory_passes_every_stage():
    t = traj()
    assert validity_problem(t, CFG) is None and matches(t.answer, t.reference_answer, 0.8) and quality_problem(t, CFG) is None


def _traj_with(**changes):
    t = traj(calls=(("search", {"query": ["a"]}, "x"), ("visit", {"url": ["u"], "goal": "g"}, "1991")))
    for index, attrs in changes.items():
        for key, value in attrs.items():
            setattr(t.steps[int(index[1:])], key, value)
    return t


def _answers_twice():
    t = traj()
    t.steps[0].answer = "1990"
    return t


def _answered_but_stopped():
    t = traj()
    t.termination = "max_turns"
    return t


def _huge_messages():
    t = traj()
    t.messages = t.messages + [Message("user", "x" * 250_000)]
    return t


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda: traj(parse_error="bad json"), "parse_error"),
        (lambda: _traj_with(s1={"parse_error": "two answers"}), "parse_error"),
        (lambda: _traj_with(s2={"parse_error": "empty"}), "parse_error"),
        (lambda: traj(wrote_tool_response=True), "wrote_tool_response"),
        (lambda: _traj_with(s1={"wrote_tool_response": True}), "wrote_tool_response"),
        (lambda: _traj_with(s2={"wrote_tool_response": True}), "wrote_tool_response"),
        (lambda: traj(calls=(("browse", {"url": ["x"]}, "obs"),)), "unknown_tool"),
        (lambda: traj(calls=(("search", {"query": ["a"]}, "o"), ("calculator", {"expression": "1+1"}, "2"))), "unknown_tool"),
        (lambda: traj(calls=(("Search", {"query": ["a"]}, "o"),)), "unknown_tool"),
        (lambda: traj(calls=(("search", {"query": "not a list"}, "obs"),)), "invalid_arguments"),
        (lambda: traj(calls=(("visit", {"url": ["http://x"]}, "obs"),)), "invalid_arguments"),
        (lambda: traj(calls=(("search", {"query": ["a"], "k": 3}, "obs"),)), "invalid_arguments"),
        (lambda: traj(answer=None), "no_answer"),
        (_answers_twice, "no_answer"),
        (_answered_but_stopped, "no_answer"),
        (lambda: traj(calls=(("search", {"query": [str(i)]}, "1991") for i in range(7))), "too_long"),
        (_huge_messages, "too_long"),
        (lambda: traj(calls=(("search", {"query": [str(i)]}, "1991") for i in range(6))), "too_long"),
        (lambda: traj(calls=(("search", {"query": ["x" * 300_000]}, "1991"),)), None),  # arguments are not message text
    ],
)
def test_validity_rules(make, reason):
    assert validity_problem(make(), CFG) == reason


async def test_long_cot_preset_turns_reasoning_into_the_thought(plugins):
    from webdancer_openai import OpenAIPolicy, OpenAIPolicyConfig

    with FakeOpenAIServer(["<answer>1991</answer>"]) as srv:
        srv.state.reasoning = "The FOLDOC entry says 1991."
        policy = OpenAIPolicy(OpenAIPolicyConfig(cot="long"), ModelConfig(base_url=srv.base_url, model="reasoner"))
        async with ToolBox.from_config(["lookup"], {}, 5) as toolbox:
            t = await Agent(policy, toolbox, AgentConfig(current_date="2026-11-24")).run("When?")
        await policy.aclose()
    assert t.steps[0].thought == "The FOLDOC entry says 1991." and t.answer == "1991"
    assert t.messages[-1].content.startswith("<think>\nThe FOLDOC entry says 1991.\n</think>")
    with FakeOpenAIServer(["I recall it.<answer>1991</answer>"]) as srv:
        srv.state.reasoning = "hidden"
        policy = OpenAIPolicy(OpenAIPolicyConfig(cot="short"), ModelConfig(base_url=srv.base_url, model="instruct"))
        async with ToolBox.from_config(["lookup"], {}, 5) as toolbox:
            t = await Agent(policy, toolbox, AgentConfig(current_date="2026-11-24")).run("When?")
        await policy.aclose()
    assert t.steps[0].thought == "I recall it." and "hidden" not in t.messages[-1].content


@pytest.mark.parametrize(
    "answer,reference,ok",
    [
        ("1991", "1991", True),
        ("It was released in 1991.", "1991", True),
        ("The race is the **Epsom Derby**, won by Santa Claus.", "Epsom Derby", True),
        ("1989", "1991", False),
        ("Guido", "Guido van Rossum", False),
        ("A very long answer that mentions 1991 somewhere among a great many other words and dates like 1989 and 2001", "1991", False),
    ],
)
def test_correctness_fallback(answer, reference, ok):
    assert matches(answer, reference, 0.8) is ok


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda: traj(calls=(("search", {"query": ["a"]}, "1991"), ("search", {"query": ["a"]}, "1991"))), "repeated_call"),
        (lambda: traj(calls=(("visit", {"url": ["u"], "goal": "g"}, "1991"), ("visit", {"url": ["u"], "goal": "g"}, "x"))), "repeated_call"),
        (lambda: traj(calls=(("search", {"query": ["a"]}, "x"), ("search", {"query": ["b"]}, "y"), ("search", {"query": ["a"]}, "1991"))), "repeated_call"),
        (lambda: traj(calls=(("search", {"query": ["a"]}, "Nothing about dates here."),)), "unsupported_answer"),
        (lambda: traj(answer="Guido van Rossum", reference="Guido van Rossum", calls=(("search", {"query": ["a"]}, "Python is a language."),)), "unsupported_answer"),
        (lambda: traj(calls=(("search", {"query": ["a"]}, "1991"),), answer="1991"), None),
        (lambda: _errored_observation(), "unsupported_answer"),
        (lambda: _long_thought(), "long_thought"),
        (lambda: _long_thought(250), "long_thought"),
        (lambda: _long_thought(150), None),
    ],
)
def test_quality_rules(make, reason):
    assert quality_problem(make(), CFG) == reason


def _errored_observation():
    t = traj()
    t.steps[0].tool_result.error = True  # an error message mentioning the answer is no evidence
    return t


def _long_thought(n=5000):
    t = traj()
    t.steps[-1].thought = "hmm " * (n // 4)
    return t


async def test_filter_keeps_shortest_per_question_and_reports(tmp_path):
    src = tmp_path / "trajs.jsonl"
    with JsonlAppender(src) as sink:
        sink.write(traj(qid="q1"))  # 2 steps
        longer = traj(calls=(("search", {"query": ["a"]}, "x"), ("search", {"query": ["b"]}, "1991")), qid="q1")
        sink.write(longer)
        sink.write(traj(qid="q2", answer="1989"))  # wrong
        sink.write(traj(qid="q3", parse_error="oops"))
        sink.write(traj(qid="q4", reference=None))
    report = await filter_file(src, tmp_path / "kept.jsonl", CFG, paper_rewards())
    kept = list(read_records(tmp_path / "kept.jsonl", Trajectory))
    assert [(t.question_id, len(t.steps)) for t in kept] == [("q1", 2)]
    assert report.total == 5 and report.kept == 1
    assert report.dropped["validity"] == {"parse_error": 1}
    assert report.dropped["correctness"] == {"wrong_answer": 1, "no_reference_answer": 1}
    assert report.dropped["quality"] == {"not_shortest": 1}


async def test_reference_release_passes_through_the_filter(reference_dir, tmp_path):
    report = await filter_file(reference_dir / "sample_traj.jsonl", tmp_path / "kept.jsonl", FilterConfig(), paper_rewards())
    assert report.total == 150 and sum(report.dropped["validity"].values()) == 0
    assert report.kept >= 30
    kept = list(read_records(tmp_path / "kept.jsonl", Trajectory))
    assert all(t.policy == "reference" and t.steps[-1].answer for t in kept)
    assert {t["name"] for t in kept[0].tools} == {"search", "visit"}


async def test_llm_judge_path(reference_dir, tmp_path):
    with FakeOpenAIServer(default="Correct") as srv:
        rewards = RewardSet.from_config(load_config(None, [f"judge.model={{base_url: '{srv.base_url}', model: judge}}"]))
        report = await filter_file(reference_dir / "sample_traj.jsonl", tmp_path / "kept.jsonl", FilterConfig(), rewards)
        await rewards.aclose()
    assert report.correctness_method == "format+judge" and "wrong_answer" not in report.dropped["correctness"]
    assert report.rewards["judge"]["model"] == "judge" and len(report.rewards["judge"]["prompt_sha256"]) == 12
    first = srv.state.requests[0]["messages"][0]["content"]
    assert "Reference answer:" in first and "Correct or Incorrect" in first
    assert len(srv.state.requests) == 150


@pytest.fixture(scope="module")
def qa_items(local_web, tmp_path_factory):
    import asyncio

    from webdancer_synth.crawlqa import CrawlQA, CrawlQAConfig

    web, _, _ = local_web
    out = tmp_path_factory.mktemp("qa") / "qa.jsonl"
    cfg = CrawlQAConfig(root_url=f"{web.base_url}/foldoc/python.html", crawl_store=str(out.with_name("c.jsonl")), max_pages=150, num_items=20,
                        kinds=["identify", "temporal", "multi_hop"])
    asyncio.run(run_synthesizer(CrawlQA(cfg), out))
    return list(read_records(out, QAItem))


async def test_expert_sampling_then_filter_keeps_its_correct_trajectories(plugins, local_web, qa_items, tmp_path):
    web, _, _ = local_web
    cfg = load_config(None, [f"web.root={web.root}", f"web.port={web.port}", "tools.visit.cache_dir=null"])
    policy = build_policy("expert", {}, cfg.model)
    out = tmp_path / "expert.jsonl"
    async with ToolBox.from_config(cfg.agent.tools, cfg.tools, 30) as toolbox:
        agent = Agent(policy, toolbox, AgentConfig(current_date="2026-11-24"))
        stats = await sample(agent, qa_items, 2, out, 8)
        again = await sample(agent, qa_items, 2, out, 8)
    assert stats.done == 40 and stats.terminations == {"answered": 40} and again.done == 0 and again.already_there == 40
    trajs = list(read_records(out, Trajectory))
    assert len({t.id for t in trajs}) == 40 and all(t.policy == "expert" and t.model == "expert-demonstrator" for t in trajs)
    hop2 = next(t for t in trajs if len(t.steps) == 4)
    assert [s.tool_call.name for s in hop2.steps[:3]] == ["search", "visit", "visit"]
    report = await filter_file(out, tmp_path / "kept.jsonl", FilterConfig(), paper_rewards())
    assert report.kept >= 15 and sum(report.dropped["validity"].values()) == 0
    assert report.dropped["quality"]["not_shortest"] >= 15


def earlier_turns_dropped(template: str) -> str:
    """A chat template that renders only the last assistant turn's text (earlier ones empty)."""
    assert template.count("{{- text }}") == 1
    return template.replace("{{- text }}", "{%- if loop.last %}{{- text }}{%- endif %}")


async def test_tiny_model_sampling_runs_and_the_filter_drops_it_with_reasons(plugins, local_web, qa_items, tiny_server, tmp_path):
    from webdancer_models.serve import served_model_name

    web, _, _ = local_web
    serve_cfg, server = tiny_server
    cfg = load_config(None, [f"web.root={web.root}", f"web.port={web.port}", "tools.visit.cache_dir=null"])
    model = ModelConfig(base_url=server.base_url, model=served_model_name(serve_cfg), max_tokens=64, temperature=0.0, return_token_ids=True)
    policy = build_policy("openai", {}, model)
    out = tmp_path / "tiny.jsonl"
    async with ToolBox.from_config(cfg.agent.tools, cfg.tools, 30) as toolbox:
        stats = await sample(Agent(policy, toolbox, AgentConfig(max_turns=2, current_date="2026-11-24")), qa_items[:2], 1, out, 2)
    await policy.aclose()
    assert stats.done == 2
    # Every turn's token ids as the server sampled them: the chat template renders them back (a template that drops
    # the earlier turns' text does not).
    trajs = list(read_records(out, Trajectory))
    assert all(s.tokens is not None and s.tokens.completion_ids for t in trajs for s in t.steps)
    assert all(len(t.steps) == 2 and t.steps[1].tokens.reused > len(t.steps[0].tokens.prompt_ids) for t in trajs)
    checked = CliRunner().invoke(cli, ["traj", "check", str(out), "--model", str(tiny_server[0].model_path)])
    # (a turn the stop string <tool_response> cut is counted apart: the tiny model writes its own observations)
    assert checked.exit_code == 0 and "2 rollouts: the chat template renders every turn's text as it was sampled" in checked.output, checked.output
    broken = tmp_path / "broken.jinja"
    broken.write_text(earlier_turns_dropped((Path(tiny_server[0].model_path) / "chat_template.jinja").read_text()))
    bad = CliRunner().invoke(cli, ["traj", "check", str(out), "--model", str(tiny_server[0].model_path), "--chat-template", str(broken)])
    assert bad.exit_code == 1 and "of 2 rollouts drift in their text (model turns)" in bad.output, bad.output
    report = await filter_file(out, tmp_path / "kept.jsonl", FilterConfig(), paper_rewards())
    assert report.total == 2 and report.kept == 0
    assert sum(sum(c.values()) for c in report.dropped.values()) == 2


def test_sample_and_filter_cli(plugins, local_web, qa_items, tmp_path):
    web, _, _ = local_web
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"question": i.question, "answer": i.answer, "id": i.id, "source_urls": i.source_urls,
                                      "provenance": i.provenance}) + "\n" for i in qa_items[:3]))
    common = [f"web.root={web.root}", f"web.port={web.port}", "tools.visit.cache_dir=null", "agent.policy=expert", f"run.root={tmp_path}"]
    result = CliRunner().invoke(cli, ["sample", str(qa), *common, "--n", "1"])
    assert result.exit_code == 0, result.output
    assert "3 new trajectories" in result.output
    result = CliRunner().invoke(cli, ["filter", str(tmp_path / "default" / "trajectories_expert.jsonl"), f"run.root={tmp_path}"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "default" / "kept_report.json").read_text())
    assert report["total"] == 3 and report["kept"] >= 2
