"""`webdancer eval`: benchmark loaders, scoring with judge and fallback, Pass@k, reports, compare."""

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from webdancer.cli import cli
from webdancer.evalsets import EvalSetError, decrypt, encrypt, load_eval_set
from webdancer.evaluation.scores import pass_at_k
from webdancer.records import ToolCall
from webdancer.testing.fake_openai import FakeOpenAIServer
from webdancer.wire import render_assistant

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
GAIA = FIXTURES / "gaia_metadata.jsonl"
WEBWALKER = FIXTURES / "webwalkerqa.json"
BROWSECOMP = FIXTURES / "browse_comp_test_set.csv"


def test_each_benchmark_format_loads_with_its_groups():
    gaia = load_eval_set(GAIA)
    assert [i.answer for i in gaia] == ["1991", "Xilinx", "Jack Kilby"]
    assert [i.provenance["groups"]["level"] for i in gaia] == ["1", "2", "2"]
    assert gaia[0].id == "c61d22de-5f6c-4958-a7f6-5e9707bd3466" and gaia[2].provenance["file_name"] == "kilby_notes.pdf"

    walker = load_eval_set(WEBWALKER)
    assert walker[1].provenance["groups"] == {"type": "multi_source", "difficulty": "medium", "domain": "dictionary", "language": "english"}
    assert walker[1].provenance["root_url"] == "http://127.0.0.1:8765/foldoc/" and len(walker[1].source_urls) == 2

    browse = load_eval_set(BROWSECOMP)  # encrypted on disk, plain after loading
    assert "integrated circuit" not in BROWSECOMP.read_text()
    assert browse[0].question == "Who invented the integrated circuit in 1958 at Texas Instruments?" and browse[0].answer == "Jack Kilby"
    assert {i.provenance["groups"]["topic"] for i in browse} == {"science & technology", "business"}


def test_browsecomp_cipher_matches_the_published_scheme():
    # SHA-256 of the canary, repeated, XOR, base64: a known vector computed by hand from that definition.
    import base64
    import hashlib

    key = hashlib.sha256(b"canary").digest()
    plain = b"x" * 40
    expected = base64.b64encode(bytes(p ^ k for p, k in zip(plain, key + key[:8]))).decode()
    assert encrypt("x" * 40, "canary") == expected and decrypt(expected, "canary") == "x" * 40


@pytest.mark.parametrize(
    "name, content, fmt, message",
    [
        ("g.jsonl", '{"task_id": "t1", "Question": "q", "Level": 1}\n', "gaia", "g.jsonl:1: GAIA record lacks field 'Final answer'"),
        ("w.json", '[{"Question": "q", "Answer": "a"}]', "webwalkerqa", "w.json:1: WebWalkerQA record lacks field 'Root_Url'"),
        ("q.jsonl", '{"question": "q", "answer": "a"}\n{"question": "q2", "answ', "qa", "q.jsonl:2: not valid JSON"),
        ("b.csv", "problem,answer\nx,y\n", "browsecomp", "b.csv: BrowseComp lacks column 'canary'"),
        ("b2.csv", "problem,answer,problem_topic,canary\n!!notbase64,y,t,c\n", "browsecomp", "b2.csv:2: the encrypted fields do not decrypt with this row's canary"),
        ("odd.jsonl", '{"prompt": "q"}\n', "auto", "cannot tell the format from the first record's keys (prompt)"),
        ("empty.jsonl", "", "auto", "no records"),
    ],
)
def test_a_file_in_the_wrong_shape_gets_an_error_naming_the_field(tmp_path, name, content, fmt, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(EvalSetError) as err:
        load_eval_set(path, fmt)
    assert message in str(err.value)


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(2, 1, 1) == 0.5 and pass_at_k(2, 1, 2) == 1.0 and pass_at_k(4, 0, 2) == 0.0
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)


def scripted_model(request):
    """Right on Kilby every time, right on Xilinx every other time, wrong on Python, prose on nothing else."""
    messages = request["messages"]
    question = messages[1]["content"]
    if not any(m["role"] == "assistant" for m in messages):
        return render_assistant("I should search.", tool_call=ToolCall("lookup", {"query": ["facts"]}))
    if "integrated circuit" in question:
        return render_assistant("Found it.", answer="It was **Jack Kilby**.")
    if "gate array" in question:
        scripted_model.xilinx += 1
        return render_assistant("Found it.", answer="Xilinx" if scripted_model.xilinx % 2 else "Altera")
    return "I think the answer is 1989."  # prose: a format error each turn, never an answer


def run_cli(*args):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result


def eval_args(tmp_path, srv, *extra):
    return ["eval", "run", str(GAIA), f"run.root={tmp_path}", "run.name=t", f"model.base_url={srv.base_url}", "model.model=m",
            "agent.tools=[lookup]", "agent.max_turns=3", "agent.concurrency=1", "eval.attachments=ask", *extra]


def test_eval_run_reports_pass_at_1_and_k_resumes_and_plots(plugins, tmp_path):
    scripted_model.xilinx = 0
    with FakeOpenAIServer(default=scripted_model) as srv:
        result = run_cli(*eval_args(tmp_path, srv, "--k", "2", "--name", "before"))
        assert result.exit_code == 0, result.output
        calls = len(srv.state.requests)
        again = run_cli(*eval_args(tmp_path, srv, "--k", "2", "--name", "before"))
        assert again.exit_code == 0 and len(srv.state.requests) == calls  # resumed: nothing re-run
    out = tmp_path / "t" / "eval" / "before"
    results = json.loads((out / "results.json").read_text())
    overall = results["overall"]
    # Kilby 2/2, Xilinx 1/2, Python 0/2 -> Pass@1 = (1 + 0.5 + 0) / 3, Pass@2 = 2/3
    assert overall["questions"] == 3 and overall["trajectories"] == 6
    assert overall["pass_at_1"] == pytest.approx(0.5) and overall["pass_at_k"] == pytest.approx(2 / 3)
    assert overall["failures"] == {"wrong_answer": 1, "max_turns": 2}
    assert overall["judged_by"] == {"format+answer": 4, "no answer": 2}
    # Python runs: 1 valid call then 2 prose turns; others: 1 valid call then the answer.
    assert overall["valid_tool_call_turns"] == pytest.approx(6 / 10)
    assert results["groups"]["level"]["1"]["pass_at_1"] == 0.0 and results["groups"]["level"]["2"]["pass_at_1"] == 0.75
    report = (out / "report.md").read_text()
    # 95 % bootstrap over 3 questions scoring 1, 0.5 and 0: every resample's mean lies in [0, 1], and
    # 1 in 27 resamples draws only the 0 (or only the 1), more than the 2.5 % each tail cuts off.
    assert overall["pass_at_1_ci"] == [0.0, 1.0] and overall["pass_at_k_ci"] == [0.0, 1.0]
    assert sorted((r["runs"], r["correct"]) for r in results["per_question"].values()) == [(2, 0), (2, 1), (2, 2)]
    assert "| all | 3 | 6 | 50.0 | 0.0–100.0 | 66.7 |" in report and "## By level" in report and "- wrong_answer: 1" in report
    assert (out / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((out / "scores.jsonl").read_text().splitlines()) == 6


def judge_reply(request):
    prompt = request["messages"][-1]["content"]
    answer = re.search(r"Answer to judge: (.*)", prompt).group(1)
    reference = re.search(r"Reference answer: (.*)", prompt).group(1)
    return "Correct" if reference.lower() in answer.lower() else "Incorrect"


def test_judge_decides_and_a_failing_judge_falls_back_to_matching(plugins, tmp_path):
    scripted_model.xilinx = 0
    with FakeOpenAIServer(default=scripted_model) as srv, FakeOpenAIServer(default=judge_reply) as judge:
        ok = run_cli(*eval_args(tmp_path, srv, "--name", "judged", f"judge.model={{base_url: '{judge.base_url}', model: j, max_retries: 0}}"))
        assert ok.exit_code == 0, ok.output
        assert len(judge.state.requests) == 2  # the two answered runs; no answer needs no judge
    results = json.loads((tmp_path / "t" / "eval" / "judged" / "results.json").read_text())
    assert results["overall"]["judged_by"] == {"format+judge": 2, "no answer": 1}
    assert results["meta"]["rewards"]["judge"]["model"] == "j" and results["meta"]["rewards"]["judge"]["weight"] == 0.9
    assert results["overall"]["pass_at_1"] == pytest.approx(2 / 3)

    scripted_model.xilinx = 0
    with FakeOpenAIServer(default=scripted_model) as srv, FakeOpenAIServer(default=(400, "cannot judge this")) as judge:
        refused = run_cli(*eval_args(tmp_path, srv, "--name", "fallback", f"judge.model={{base_url: '{judge.base_url}', model: j, max_retries: 0}}"))
        assert refused.exit_code == 0, refused.output
    scores = [json.loads(line) for line in (tmp_path / "t" / "eval" / "fallback" / "scores.jsonl").read_text().splitlines()]
    methods = [s["method"] for s in scores]
    assert sum(m.startswith("match (judge failed:") and "400" in m for m in methods) == 2 and sum(s["correct"] for s in scores) == 2


@pytest.mark.parametrize("failure", ["down", "times out"])
def test_a_judge_outage_leaves_runs_unscored_until_a_rerun(plugins, tmp_path, failure):
    scripted_model.xilinx = 0

    def judged(url, extra=""):
        return f"judge.model={{base_url: '{url}', model: j, max_retries: 0{extra}}}"

    broken = FakeOpenAIServer(default=(503, "judge down")) if failure == "down" else FakeOpenAIServer(default=judge_reply, latency_s=2.0)
    with FakeOpenAIServer(default=scripted_model) as srv:
        with broken as judge:
            down = CliRunner().invoke(cli, eval_args(tmp_path, srv, "--name", "jd", judged(judge.base_url, ", timeout_s: 0.3")))
        assert down.exit_code == 1 and "2 planned run(s) are missing" in down.output  # the two answered runs
        results = json.loads((tmp_path / "t" / "eval" / "jd" / "results.json").read_text())
        assert results["complete"] is False and results["overall"]["judged_by"] == {"no answer": 1}
        with FakeOpenAIServer(default=judge_reply) as judge:
            back = CliRunner().invoke(cli, eval_args(tmp_path, srv, "--name", "jd", judged(judge.base_url)))
        assert back.exit_code == 0, back.output
    results = json.loads((tmp_path / "t" / "eval" / "jd" / "results.json").read_text())
    assert results["complete"] is True and results["overall"]["judged_by"] == {"format+judge": 2, "no answer": 1}


def test_compare_shows_two_runs_side_by_side(plugins, tmp_path):
    scripted_model.xilinx = 0
    with FakeOpenAIServer(default=scripted_model) as srv:
        assert run_cli(*eval_args(tmp_path, srv, "--name", "a")).exit_code == 0
        assert run_cli(*eval_args(tmp_path, srv, "--name", "b", "agent.max_turns=1")).exit_code == 0
    base = tmp_path / "t" / "eval"
    result = run_cli("eval", "compare", str(base / "a"), str(base / "b"), "--out", str(tmp_path / "cmp"))
    assert result.exit_code == 0, result.output
    text = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| a | 3 |" in text and "| b | 3 |" in text and "**b vs a**" in text
    # Paired by question: b loses the two a answered (-1, -1, 0); a resample of only the third question (1 in 27)
    # puts 0 inside the interval, so 3 questions cannot tell the runs apart.
    assert "Pass@1 -66.7 pts (95 % CI -100.0 to +0.0, 3 questions in both): indistinguishable" in text
    assert text.count("- Pass@1 ") == 1  # one run per question: Pass@k is Pass@1, stated once
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 1000
    missing = CliRunner().invoke(cli, ["eval", "compare", str(base / "a"), str(tmp_path)])
    assert missing.exit_code != 0 and "no results.json there" in missing.output
    # LABEL=PATH names a run in the comparison (seeds of one experiment all have the eval name after_rl).
    labelled = run_cli("eval", "compare", f"sft={base / 'a'}", f"rl_seed2={base / 'b'}", "--out", str(tmp_path / "named"))
    assert labelled.exit_code == 0, labelled.output
    assert "**rl_seed2 vs sft**" in (tmp_path / "named" / "compare.md").read_text()
    gone = CliRunner().invoke(cli, ["eval", "compare", str(base / "a"), f"x={tmp_path / 'nowhere'}"])
    assert gone.exit_code == 2 and "nowhere does not exist" in gone.output


def test_eval_of_a_corrupted_file_is_one_clear_line(plugins, tmp_path):
    bad = tmp_path / "metadata.jsonl"
    bad.write_text('{"task_id": "t", "Question": "q", "Final answer": "a", "Level": 1}\n{"task_id": \n')
    result = CliRunner().invoke(cli, ["eval", "run", str(bad), f"run.root={tmp_path}"])
    assert result.exit_code == 2
    assert "metadata.jsonl:2: not valid JSON" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("path, group", [(GAIA, "level"), (WEBWALKER, "difficulty"), (BROWSECOMP, "topic")])
def test_each_format_evaluates_to_a_report_with_its_groups_and_plot(plugins, tmp_path, path, group):
    scripted_model.xilinx = 0
    with FakeOpenAIServer(default=scripted_model) as srv:
        args = eval_args(tmp_path, srv, "--name", "x")
        args[2] = str(path)
        result = run_cli(*args)
    assert result.exit_code == 0, result.output
    out = tmp_path / "t" / "eval" / "x"
    results = json.loads((out / "results.json").read_text())
    assert results["overall"]["questions"] == len(load_eval_set(path)) and group in results["groups"]
    assert f"## By {group}" in (out / "report.md").read_text() and (out / "plot.png").stat().st_size > 1000
    assert "Pass@1" in result.output


def test_gaia_questions_with_attachments_are_skipped_by_default(plugins, tmp_path):
    scripted_model.xilinx = 0
    with FakeOpenAIServer(default=scripted_model) as srv:
        args = [a for a in eval_args(tmp_path, srv, "--name", "text-only") if a != "eval.attachments=ask"]
        result = run_cli(*args)
        bad = CliRunner().invoke(cli, [*args, "eval.attachments=never"])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "t" / "eval" / "text-only" / "results.json").read_text())
    assert results["overall"]["questions"] == 2  # the Kilby question names kilby_notes.pdf
    assert results["meta"]["attachments"].startswith("1 questions with an attached file skipped")
    assert bad.exit_code == 2 and "'eval.attachments': 'never'; choose one of skip, ask" in bad.output


def test_the_closing_line_never_shows_a_missing_result_as_zero():
    from dataclasses import asdict

    from webdancer.evaluation.report import summary_line
    from webdancer.evaluation.scores import Summary

    nothing = {"complete": False, "incomplete_runs": 12, "overall": asdict(Summary(k=1))}
    assert summary_line(nothing).startswith("nothing scored: 12 planned run(s) missing") and "0.0%" not in summary_line(nothing)
    one = {"complete": True, "incomplete_runs": 0, "overall": asdict(Summary(questions=12, trajectories=12, k=1, pass_at_1=0.5, pass_at_k=0.5,
                                                                            pass_at_1_ci=[0.25, 0.75]))}
    assert summary_line(one) == "Pass@1 50.0% [25.0, 75.0]  (12 questions, 12 runs)"  # k=1: Pass@1 once
    four = {"complete": False, "incomplete_runs": 3, "overall": {**one["overall"], "k": 4, "trajectories": 45, "pass_at_k": 0.75}}
    assert summary_line(four) == "Pass@1 50.0% [25.0, 75.0]  Pass@4 75.0%  (12 questions, 45 runs; PARTIAL: 3 run(s) missing)"
