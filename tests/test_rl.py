"""RL plugin, core side: verl's data files, the DAPO command, compute_score (verl itself: tests/verl_side)."""

import asyncio
import dataclasses
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from webdancer.cli import cli
from webdancer.config_loader import load_config
from webdancer.errors import OutageError, WebdancerError
from webdancer.plugins import get_plugins
from webdancer.records import QAItem, ToolCall
from webdancer.testing.fake_openai import FakeOpenAIServer
from webdancer.wire import render_assistant

get_plugins().add_commands(cli)  # what `webdancer` (main) does: plugin commands such as `rl`
ITEMS = [QAItem(f"Question number {i} about the offline web?", f"answer {i}", tag="crawlqa") for i in range(40)]


def qa_file(tmp_path, items=ITEMS):
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps({"question": i.question, "answer": i.answer, "tag": i.tag}) + "\n" for i in items))
    return path


def test_prepare_writes_verl_rows_split_stably(tmp_path):
    out = tmp_path / "run"
    args = ["rl", "prepare", str(qa_file(tmp_path)), f"run.root={out}", "run.name=r", "agent.current_date=2026-11-24"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    data = out / "r" / "rl_data"
    train, val = pq.read_table(data / "train.parquet").to_pylist(), pq.read_table(data / "val.parquet").to_pylist()
    assert len(train) + len(val) == 40 and 0 < len(val) < 12
    row = train[0]
    assert row["agent_name"] == "webdancer_agent" and row["data_source"] == "webdancer/crawlqa"
    assert [m["role"] for m in row["prompt"]] == ["system", "user"] and row["extra_info"]["question"] in row["prompt"][1]["content"]
    assert row["reward_model"] == {"style": "rule", "ground_truth": row["extra_info"]["question"].split()[2].join(["answer ", ""])}
    tools = yaml.safe_load((data / "tool_config.yaml").read_text())["tools"]
    assert [t["config"]["tool"] for t in tools] == ["search", "visit"] and all(t["class_name"] == "webdancer_rl.verl_tool.WebdancerTool" for t in tools)
    assert tools[0]["tool_schema"]["function"]["parameters"]["properties"]["query"]["items"] == {"type": "string"}
    assert yaml.safe_load((data / "agent_loops.yaml").read_text()) == [{"name": "webdancer_agent", "_target_": "webdancer_rl.verl_agent.WebdancerAgentLoop",
                                                                         "max_turn_tokens": 0, "context": {"name": "blank_old", "options": {}, "max_tokens": 32768}}]
    # More questions later: nobody moves between train and val.
    result = CliRunner().invoke(cli, ["rl", "prepare", str(qa_file(tmp_path, ITEMS + [QAItem("One more?", "yes")]))] + args[3:])
    assert result.exit_code == 0
    val_again = {r["extra_info"]["question_id"] for r in pq.read_table(data / "val.parquet").to_pylist()}
    assert {r["extra_info"]["question_id"] for r in val} <= val_again


def test_train_print_command_records_the_native_verl_command(tmp_path):
    run = ["run.root=" + str(tmp_path), "run.name=r"]
    assert CliRunner().invoke(cli, ["rl", "prepare", str(qa_file(tmp_path)), *run]).exit_code == 0
    result = CliRunner().invoke(cli, ["rl", "train", *run, "rl.n_rollouts=4", "rl.extra=[trainer.device=cpu]", "--print-command"])
    assert result.exit_code == 0, result.output
    script = (tmp_path / "r" / "rl" / "command.sh").read_text()
    assert "-m verl.trainer.main_ppo" in script and "actor_rollout_ref.rollout.n=4" in script and script.rstrip().endswith("trainer.device=cpu")
    for key in ("actor_rollout_ref.actor.clip_ratio_high=0.28", "algorithm.filter_groups.enable=true", "actor_rollout_ref.actor.loss_agg_mode=token-mean",
                "+reward.reward_kwargs.overlong_buffer_cfg.enable=true", "actor_rollout_ref.rollout.name=vllm",
                "actor_rollout_ref.rollout.agent.default_agent_loop=webdancer_agent", "+reward.custom_reward_function.reward_kwargs.weights.answer=0.9"):
        assert key in script
    missing = CliRunner().invoke(cli, ["rl", "train", "run.root=" + str(tmp_path), "run.name=nothing", "rl.venv=" + str(tmp_path / "none")])
    assert "hydra.run.dir=" + str(tmp_path / "r" / "rl" / "hydra") in script  # verl's hydra logs stay in the run folder
    assert missing.exit_code != 0 and "run `webdancer rl prepare QA_FILE` first" in missing.output
    bad_metric = CliRunner().invoke(cli, ["rl", "train", *run, "rewards={answer: {metric: bleu}}", "--print-command"])
    assert bad_metric.exit_code == 2 and "rewards.answer.metric" in bad_metric.output and "'f1'" in bad_metric.output
    stray = CliRunner().invoke(cli, ["rl", "train", *run, "rewards={answer: {metric: f1}, format: {weight: 1}}", "--print-command"])
    assert stray.exit_code == 2 and "rewards.answer has options but no weight" in stray.output
    typo = CliRunner().invoke(cli, ["rl", "train", *run, "rewards={format: {metric: x}, answer: {weight: 1}}", "--print-command"])
    assert typo.exit_code == 2 and "unknown config key 'rewards.format.metric'" in typo.output  # format takes no options
    moved = CliRunner().invoke(cli, ["rl", "train", *run, "reward_options={judge: {model: {}}}", "--print-command"])
    assert moved.exit_code == 2 and "'reward_options.judge' has moved: set judge (judge.model" in moved.output
    no_judge = CliRunner().invoke(cli, ["rl", "train", *run, "rewards={judge: {weight: 1}}", "--print-command"])
    assert no_judge.exit_code == 2 and "'judge' needs a judge model: set judge.model" in no_judge.output



def test_train_without_a_gpu_is_refused_with_the_way_out(tmp_path, monkeypatch):
    from webdancer_rl.train import gpu_visible

    if gpu_visible():
        pytest.skip("a GPU is visible: verl would really train")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    run = ["run.root=" + str(tmp_path), "run.name=r"]
    assert CliRunner().invoke(cli, ["rl", "prepare", str(qa_file(tmp_path)), *run]).exit_code == 0
    result = CliRunner().invoke(cli, ["rl", "train", *run])
    assert result.exit_code == 1 and "needs a GPU and none is visible" in result.output and "RAY_ADDRESS" in result.output
    assert (tmp_path / "r" / "rl" / "command.sh").is_file()  # recorded for the GPU machine all the same

def rollout(answer, thought="The page says so."):
    call = render_assistant("search", tool_call=ToolCall("search", {"query": ["kilby"]}))
    return f"{call}\nuser\n<tool_response>\nJack Kilby invented it.\n</tool_response>\nassistant\n" + render_assistant(thought, answer=answer)


def test_compute_score_weights_format_and_answer():
    from webdancer_rl.reward import compute_score

    def score(text, **kw):
        return asyncio.run(compute_score("webdancer/crawlqa", text, "Jack Kilby", {"question": "Who?"}, **kw))

    assert score(rollout("Jack Kilby")) == {"format": 1.0, "answer": 1.0, "score": pytest.approx(1.0), "judge_failed": 0.0}
    assert score(rollout("Robert Noyce"))["score"] == pytest.approx(0.1)
    assert score("I believe it was Jack Kilby.")["score"] == 0.0  # no <answer>: neither format nor answer
    assert score(rollout("Jack Kilby"), weights={"answer": 1.0})["score"] == 1.0
    assert score(rollout("It was Jack Kilby in 1958"), options={"answer": {"metric": "exact"}})["answer"] == 0.0


def test_compute_score_with_a_judge_and_its_fallback():
    from webdancer_rl.reward import compute_score

    with FakeOpenAIServer(default="Correct") as judge:
        options = {"judge": {"model": {"base_url": judge.base_url, "model": "j", "max_retries": 0}}}
        out = asyncio.run(compute_score("s", rollout("J. Kilby of TI"), "Jack Kilby", {"question": "Who?"}, weights={"format": 0.1, "judge": 0.9}, options=options))
        assert out["judge"] == 1.0 and out["judge_failed"] == 0.0 and "J. Kilby of TI" in judge.state.requests[0]["messages"][0]["content"]
    with FakeOpenAIServer(default=(400, "bad request")) as judge:  # a judge that refuses: match instead, and say so
        options = {"judge": {"model": {"base_url": judge.base_url, "model": "j2", "max_retries": 0}}}
        out = asyncio.run(compute_score("s", rollout("Jack Kilby"), "Jack Kilby", {}, weights={"format": 0.1, "judge": 0.9}, options=options))
    assert out["judge_failed"] == 1.0 and out["judge"] == 1.0
    with FakeOpenAIServer(default=(503, "down")) as judge:  # a judge that is down: never a reward
        options = {"judge": {"model": {"base_url": judge.base_url, "model": "j3", "max_retries": 0}}}
        with pytest.raises(OutageError, match="HTTP 503"):
            asyncio.run(compute_score("s", rollout("Jack Kilby"), "Jack Kilby", {}, weights={"format": 0.1, "judge": 0.9}, options=options))


def test_rl_overrides_are_all_plain_key_value(tmp_path):
    from webdancer_rl.train import verl_overrides

    cfg = load_config(None, ["rl.filter_groups=false", "rl.overlong_buffer=0"])
    overrides = verl_overrides(cfg, Path("d"), Path("o"))
    assert all("=" in o and " " not in o.split("=", 1)[0] for o in overrides)
    assert "algorithm.filter_groups.enable=false" in overrides and "+reward.reward_kwargs.overlong_buffer_cfg.enable=false" in overrides


def test_verl_metrics_land_in_metrics_jsonl_under_our_names(tmp_path):
    """What verl's file logger writes (names from verl 0.9.1's metric_utils) becomes metrics.jsonl's names, once."""
    from webdancer_rl.metrics import add_verl_metrics

    verl_log, metrics = tmp_path / "verl_metrics.jsonl", tmp_path / "metrics.jsonl"
    lines = [{"step": s, "data": {"critic/score/mean": 0.1 * s, "response_length/mean": 300.0 + s, "timing_s/step": 12.5,
                                  "actor/pg_loss": 0.01, "actor/grad_norm": 1.5, "actor/entropy": 0.4, "training/epoch": 0}} for s in (1, 2)]
    verl_log.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert add_verl_metrics(verl_log, metrics) == 2
    first = json.loads(metrics.read_text().splitlines()[0])
    assert first == {"step": 1, "reward/mean": 0.1, "response_length/mean": 301.0, "seconds_per_step": 12.5, "loss": 0.01,
                     "grad_norm": 1.5, "entropy": 0.4}
    assert add_verl_metrics(verl_log, metrics) == 0 and len(metrics.read_text().splitlines()) == 2  # a rerun adds nothing twice


def default_alarms():
    from webdancer_rl.alarms import Thresholds
    from webdancer_rl.config import RlConfig

    return Thresholds.of(RlConfig())


def healthy(step, **changes):
    """A step's metrics in both engines' names; `changes` override them."""
    m = {"step": step, "loss": 0.1, "reward/mean": 0.3, "reward/format/mean": 0.9, "reward/answer/mean": 0.25, "answered_rate": 0.8,
         "valid_turn_rate": 0.95, "tool_calls/mean": 2.0, "response_length/mean": 800.0}
    return {**m, **changes}


@pytest.mark.parametrize("name,late,needle", [
    ("tool_calls", {"tool_calls/mean": 0.6}, "tool calls per rollout 0.60 (steps 4-6 against 1-3: 2.00), below rl.alarm_tool_call_drop=0.5"),
    ("valid_turns", {"valid_turn_rate": 0.5}, "valid-turn rate 0.50 (steps 4-6 against 1-3: 0.95), a fall of more than rl.alarm_valid_turn_drop=0.3"),
    ("format_only", {"reward/answer/mean": 0.0, "reward/format/mean": 1.0}, "the answer rewards are 0.000 (steps 4-6), at most rl.alarm_format_only"),
    ("answer_sooner", {"answered_rate": 0.98, "reward/answer/mean": 0.15}, "answered 0.98 (start 0.80, up at least rl.alarm_answered_rise=0.1) "
                                                                            "while correctness fell to 0.15"),
    ("length", {"response_length/mean": 1700.0}, "mean response length 1700 tokens (steps 4-6 against 1-3: 800), past rl.alarm_length_growth=2.0x"),
])
def test_each_alarm_names_the_metric_value_threshold_and_a_fix(name, late, needle):
    from webdancer_rl.alarms import Alarms

    said = []
    alarms = Alarms(default_alarms(), said.append)
    held = [alarms.check(healthy(step)) for step in (1, 2, 3)]
    held += [alarms.check(healthy(step, **late)) for step in (4, 5, 6, 7)]
    assert held[:6] == [[]] * 5 + [[name]]  # windows of 3: the late steps' mean only crosses once all three are late
    assert held[6] == [name] and len(said) == 1  # it holds on, said once
    assert said[0].startswith(f"alarm {name}: ") and needle in said[0]
    assert len(said[0].split(". ", 1)[1]) > 20  # and what a user usually does about it
    # A healthy run raises none; a resumed run remembers what was raised (said once per run, not per process).
    quiet = Alarms(default_alarms(), said.append)
    assert all(quiet.check(healthy(step)) == [] for step in range(1, 10))
    history = [{**healthy(s, **(late if s > 3 else {})), "alarms": [name] if s == 6 else []} for s in range(1, 7)]
    again = Alarms(default_alarms(), said.append, history=history)
    assert again.check(healthy(7, **late)) == [name] and len(said) == 1


def test_the_heldout_gap_alarm_and_a_nan_loss_stop():
    from webdancer_rl.alarms import Alarms, stop_on_bad_loss

    said = []
    alarms = Alarms(dataclasses.replace(default_alarms(), window=2), said.append)
    alarms.check(healthy(1, **{"reward/mean": 0.3}))
    first = healthy(2, **{"reward/mean": 0.3, "heldout/reward/mean": 0.28})
    assert alarms.check(first) == [] and first["heldout/gap"] == pytest.approx(0.02)
    for step in (3, 4):
        alarms.check(healthy(step, **{"reward/mean": 0.5}))
    late = healthy(5, **{"reward/mean": 0.5, "heldout/reward/mean": 0.2})
    assert alarms.check(late) == ["heldout_gap"] and late["heldout/gap"] == pytest.approx(0.3)
    assert "training reward minus held-out reward 0.30 at step 5 (step 2: 0.02), widened by more than rl.alarm_heldout_gap=0.15" in said[0]
    with pytest.raises(WebdancerError, match="the loss became nan at step 4.*checkpoint-3 is intact"):
        stop_on_bad_loss({"step": 4, "loss": float("nan")}, lambda: "checkpoint-3 is intact.")


def test_verl_steps_get_their_alarms_in_metrics_jsonl(tmp_path, monkeypatch):
    """verl logs no tool calls, answered rate or reward components per training step: what our agent loop and
    compute_score record of each rollout (rl/rollout_stats) is joined per step, so every alarm can fire on verl too."""
    from webdancer_rl.alarms import Alarms
    from webdancer_rl.metrics import add_verl_metrics
    from webdancer_rl.rollout_stats import ROLLOUT_STATS_ENV, RolloutStats, record_rollout, record_score, score_key

    stats = tmp_path / "rollout_stats"
    monkeypatch.setenv(ROLLOUT_STATS_ENV, str(stats))
    # Steps 1-3 of 4 rollouts: the policy stops searching and answers every time, more and more often wrongly.
    for step, calls, answered, right in ((1, 3, 2, 2), (2, 1, 4, 1), (3, 0, 4, 0)):
        for i in range(4):
            text = f"rollout {step}.{i}"
            record_rollout(RolloutStats(turns=calls + 1, well_formed_turns=calls + 1, tool_calls=calls, tool_errors=0, format_errors=0,
                                        end="answer" if i < answered else "max_turns", model_tokens=100, response_length=300,
                                        step=step, question_id=f"q{i}", key=score_key(f"q{i}", text)))
            correct = float(i < right)
            record_score(f"q{i}", text, {"format": float(i < answered), "answer": correct, "score": 0.1 * (i < answered) + 0.9 * correct,
                                         "judge_failed": 0.0})
    for step, right in ((0, 1), (3, 0)):  # verl's validation (val_before_train, then trainer.test_freq): held-out rollouts
        for i in range(2):
            record_rollout(RolloutStats(turns=2, well_formed_turns=2, tool_calls=1, tool_errors=0, format_errors=0, end="answer",
                                        model_tokens=50, response_length=200, step=step, split="test", question_id=f"v{i}",
                                        key=score_key(f"v{i}", f"val {step}.{i}")))
            record_score(f"v{i}", f"val {step}.{i}", {"format": 1.0, "answer": float(i < right), "score": 0.1 + 0.9 * (i < right), "judge_failed": 0.0})
    record_rollout(RolloutStats(turns=1, well_formed_turns=0, tool_calls=0, tool_errors=0, format_errors=0, end="cut",
                                model_tokens=10, response_length=10, step=None))  # a trainer that does not say the step: left out

    verl_log, metrics = tmp_path / "verl_metrics.jsonl", tmp_path / "metrics.jsonl"
    lines = [{"step": 0, "data": {"val-core/webdancer/acc/mean@1": 0.5}}]
    lines += [{"step": s, "data": {"critic/score/mean": 0.2, "response_length/mean": 300.0 if s < 2 else 900.0}} for s in (1, 2, 3)]
    verl_log.write_text("".join(json.dumps(x) + "\n" for x in lines))
    said = []
    check = Alarms(dataclasses.replace(default_alarms(), window=1), said.append).check
    assert add_verl_metrics(verl_log, metrics, check, stats) == 4
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert rows[0]["heldout/reward/mean"] == pytest.approx(0.55) and "reward/mean" not in rows[0]
    assert rows[1]["tool_calls/mean"] == 3.0 and rows[1]["answered_rate"] == 0.5 and rows[1]["reward/answer/mean"] == 0.5
    assert rows[1]["reward/mean"] == 0.2 and rows[1]["judge_failed/mean"] == 0.0 and "reward/judge_failed/mean" not in rows[1]
    assert rows[1]["response_length/mean"] == 300.0 and rows[3]["heldout/reward/mean"] == pytest.approx(0.1)
    assert [r["alarms"] for r in rows] == [[], [], ["tool_calls", "answer_sooner"], ["tool_calls", "format_only", "answer_sooner"]]
    assert [line.split(":")[0] for line in said] == ["alarm tool_calls", "alarm answer_sooner", "alarm format_only"]


def test_prepare_can_keep_a_small_stable_training_set(tmp_path):
    run = ["run.root=" + str(tmp_path), "run.name=r", "rl.val_fraction=0"]
    assert CliRunner().invoke(cli, ["rl", "prepare", str(qa_file(tmp_path)), *run, "rl.train_questions=5"]).exit_code == 0
    first = [r["extra_info"]["question_id"] for r in pq.read_table(tmp_path / "r" / "rl_data" / "train.parquet").to_pylist()]
    bigger = ITEMS + [QAItem(f"Another question {i}?", "x") for i in range(10)]
    assert CliRunner().invoke(cli, ["rl", "prepare", str(qa_file(tmp_path, bigger)), *run, "rl.train_questions=5"]).exit_code == 0
    again = [r["extra_info"]["question_id"] for r in pq.read_table(tmp_path / "r" / "rl_data" / "train.parquet").to_pylist()]
    assert len(first) == 5 and len(set(again) & set(first)) >= 3  # chosen by id hash: new questions displace few
