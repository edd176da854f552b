"""One reward path: the filter, `webdancer eval` and RL's compute_score score with the same `rewards`
and `judge`, and any registered reward plugin works in all three."""

import asyncio
import json

from click.testing import CliRunner
from test_eval import eval_args, scripted_model

from webdancer.cli import cli
from webdancer.testing.fake_openai import FakeOpenAIServer

SHORT = ["rewards={short: {weight: 1.0, max_words: 3}}"]


def test_a_plugin_reward_decides_eval_filter_and_rl_alike(plugins, tmp_path):
    from webdancer_rl.reward import compute_score

    scripted_model.xilinx = 0
    with FakeOpenAIServer(default=scripted_model) as srv:
        paper = CliRunner().invoke(cli, eval_args(tmp_path, srv, "--name", "paper"))
        scripted_model.xilinx = 0
        short = CliRunner().invoke(cli, eval_args(tmp_path, srv, "--name", "short", *SHORT))
    assert paper.exit_code == 0 and short.exit_code == 0, short.output
    runs = tmp_path / "t" / "eval"
    by_paper, by_short = (json.loads((runs / name / "results.json").read_text()) for name in ("paper", "short"))
    # "It was **Jack Kilby**." is right but 4 words; "Xilinx" is right and short; the Python runs never answer.
    assert by_paper["overall"]["judged_by"] == {"format+answer": 2, "no answer": 1}
    assert by_short["overall"]["judged_by"] == {"short": 2, "no answer": 1}
    assert by_paper["overall"]["pass_at_1"] * 3 == 2 and by_short["overall"]["pass_at_1"] * 3 == 1
    assert by_short["meta"]["rewards"] == {"short": {"weight": 1.0, "max_words": 3}}
    assert by_paper["meta"]["rewards"]["answer"] == {"weight": 0.9, "metric": "match", "f1_threshold": 0.8}
    assert "`short` weight 1.0: max_words `3`" in (runs / "short" / "report.md").read_text()
    scores = [json.loads(line) for line in (runs / "short" / "scores.jsonl").read_text().splitlines()]
    assert sorted(s["rewards"]["short"] for s in scores) == [0.0, 0.0, 1.0]

    trajectories = runs / "paper" / "trajectories.jsonl"
    for name, extra, wrong in (("paper", [], 0), ("short", SHORT, 1)):
        out = tmp_path / f"kept_{name}.jsonl"
        result = CliRunner().invoke(cli, ["filter", str(trajectories), f"run.root={tmp_path}", "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
        report = json.loads(out.with_name(out.stem + "_report.json").read_text())
        assert report["dropped"]["correctness"].get("wrong_answer", 0) == wrong  # Kilby's 4-word answer, by `short`
        assert list(report["rewards"]) == (["short"] if extra else ["format", "answer"])

    def score(text):
        return asyncio.run(compute_score("s", f"<think>x</think>\n<answer>{text}</answer>", "Jack Kilby", {},
                                         weights={"short": 1.0}, options={"short": {"max_words": 3}}))

    assert score("Jack Kilby") == {"short": 1.0, "score": 1.0, "judge_failed": 0.0}
    assert score("It was Jack Kilby in 1958")["score"] == 0.0


def test_the_judge_is_configured_once_and_decides_by_default(plugins, tmp_path):
    scripted_model.xilinx = 0
    with FakeOpenAIServer(default=scripted_model) as srv, FakeOpenAIServer(default="Incorrect") as judge:
        result = CliRunner().invoke(cli, eval_args(tmp_path, srv, "--name", "j", f"judge.model={{base_url: '{judge.base_url}', model: strict}}"))
        assert result.exit_code == 0, result.output
        assert len(judge.state.requests) == 2  # the two answers; the judge says both are wrong
    results = json.loads((tmp_path / "t" / "eval" / "j" / "results.json").read_text())
    assert results["overall"]["pass_at_1"] == 0.0 and list(results["meta"]["rewards"]) == ["format", "judge"]
    assert results["meta"]["rewards"]["judge"]["prompt"] == "webdancer_rewards/prompts/judge.txt"
    shown = CliRunner().invoke(cli, ["config", "show", "judge.model={model: strict}"])
    assert "judge:\n    weight: 0.9" in shown.output and "answer:\n    weight" not in shown.output


def test_bad_rewards_are_refused_before_any_rollout(plugins, tmp_path):
    with FakeOpenAIServer(default=scripted_model) as srv:
        for overrides, message in [
            (["rewards={nope: {weight: 1}}"], "no reward named 'nope' is registered"),
            (["rewards.answer.weight=-1"], "weights must be non-negative"),
            (["rewards={answer: {weight: 0}, format: {weight: 0}}"], "the weights are all zero"),
            (["rewards={short: {max_words: 3}}"], "rewards.short has options but no weight"),
            (["rewards={short: {weight: 1, max_word: 3}}"], "unknown config key 'rewards.short.max_word'"),
            (["rewards={judge: {weight: 1}}"], "'judge' needs a judge model: set judge.model"),
            (["eval.judge={model: j}"], "'eval.judge' has moved: set judge.model"),
            (["filter.f1_threshold=0.5"], "'filter.f1_threshold' has moved: set rewards.answer.f1_threshold"),
            (["rewards={answer: 0.9}"], "'rewards.answer' is 0.9: a reward is now its weight and options together; set rewards.answer.weight: 0.9"),
            (["reward_options={answer: {f1_threshold: 0.5}}"], "'reward_options' has moved: set rewards.<name>"),
            (["policy.name=expert"], "'policy.name' has moved: set agent.policy"),
            (["rewards={judge: {weight: 0.9, model: {model: j}}}"], "'rewards.judge' takes only a weight"),
        ]:
            result = CliRunner().invoke(cli, eval_args(tmp_path, srv, "--name", "bad", *overrides))
            assert result.exit_code in (1, 2) and message in result.output and "Traceback" not in result.output, (overrides, result.output)
        assert srv.state.requests == []
