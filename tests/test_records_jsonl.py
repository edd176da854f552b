import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from webdancer.errors import RecordError
from webdancer.jsonl import JsonlAppender, atomic_write_json, json_line, read_records
from webdancer.records import Message, QAItem, Step, ToolCall, ToolResult, Trajectory, Usage, record_from_dict
from webdancer.typed import to_dict


def make_traj(i=0):
    return Trajectory(
        id=f"q{i}:0",
        question="Who?",
        messages=[Message("system", "s"), Message("user", "u"), Message("assistant", "<answer>x</answer>")],
        steps=[Step(0, "raw", "t", ToolCall("search", {"query": ["a"]}), ToolResult("search", "obs", False, 0.1), usage=Usage(3, 4))],
        answer="x",
        usage=Usage(3, 4),
    )


def test_trajectory_round_trip():
    traj = make_traj()
    data = json.loads(json.dumps(to_dict(traj)))
    assert record_from_dict(Trajectory, data) == traj


def test_reference_qa_schema_loads_and_gets_stable_ids(reference_dir):
    items = list(read_records(reference_dir / "sample_qa.jsonl", QAItem))
    assert len(items) == 150
    assert {i.tag for i in items} == {"e2hqa", "crawlqa"}
    again = list(read_records(reference_dir / "sample_qa.jsonl", QAItem))
    assert [i.id for i in items] == [i.id for i in again]
    assert len({i.id for i in items}) == 150


@pytest.mark.parametrize(
    "record,field,expect",
    [
        ({"answer": "a"}, "question", "is missing"),
        ({"question": 3, "answer": "a"}, "question", "expected str"),
        ({"question": "q", "answer": "a", "hops": "two"}, "hops", "expected an integer"),
        ({"question": "q", "answer": "a", "source_urls": "http://x"}, "source_urls", "expected a list"),
        ({"question": "q", "answer": "a", "colour": "red"}, "colour", "is not a field"),
    ],
)
def test_bad_record_error_names_file_line_and_field(tmp_path, record, field, expect):
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"question": "fine", "answer": "ok"}) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(RecordError) as err:
        list(read_records(path, QAItem))
    msg = str(err.value)
    assert f"{path}:2" in msg and f"'{field}'" in msg and expect in msg


def test_nested_field_path_in_error(tmp_path):
    data = to_dict(make_traj())
    data["steps"][0]["tool_call"]["name"] = None
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(data) + "\n")
    with pytest.raises(RecordError, match=r"t.jsonl:1: .*'steps\[0\]\.tool_call\.name'"):
        list(read_records(path, Trajectory))


def test_invalid_json_line_is_reported(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"question": "q", "answer": "a"}\n{oops\n{"question": "q2", "answer": "b"}\n')
    with pytest.raises(RecordError, match=r"x.jsonl:2: not valid JSON"):
        list(read_records(path, QAItem))


def test_resume_after_torn_write_loses_nothing_and_duplicates_nothing(tmp_path):
    path = tmp_path / "out.jsonl"
    with JsonlAppender(path) as sink:
        for i in range(5):
            sink.write(QAItem(question=f"q{i}", answer="a", id=f"id{i}"))
    # A crash in the middle of record 5: half a line on disk.
    with path.open("a") as fh:
        fh.write('{"question": "q5", "answer": "a", "id": "id5", "ta')
    sink = JsonlAppender(path)
    assert sink.done == {f"id{i}" for i in range(5)}
    for i in range(8):
        if f"id{i}" not in sink:
            sink.write(QAItem(question=f"q{i}", answer="a", id=f"id{i}"))
    sink.close()
    ids = [r.id for r in read_records(path, QAItem)]
    assert ids == [f"id{i}" for i in range(8)]


WRITER = textwrap.dedent(
    """
    import sys, time
    from webdancer.jsonl import JsonlAppender
    from webdancer.records import QAItem
    with JsonlAppender(sys.argv[1]) as sink:
        for i in range(100000):
            if f"id{i}" in sink:
                continue
            sink.write(QAItem(question="q" * 2000 + str(i), answer="a", id=f"id{i}"))
            if i == 2000:
                print("ready", flush=True)
            time.sleep(0.0002)
    """
)


def test_kill_9_mid_run_then_resume(tmp_path):
    """A real writer killed with SIGKILL, then resumed: every id exactly once, in order."""
    path = tmp_path / "out.jsonl"
    script = tmp_path / "writer.py"
    script.write_text(WRITER.replace("range(100000)", "range(6000)"))
    proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    subprocess.run([sys.executable, str(script), str(path)], check=True, stdout=subprocess.DEVNULL)
    ids = [r.id for r in read_records(path, QAItem)]
    assert ids == [f"id{i}" for i in range(6000)]


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "report.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"b": 2})
    assert json.loads(path.read_text()) == {"b": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_to_dict_is_asdict_without_sharing_anything_mutable():
    import dataclasses
    from collections import Counter

    @dataclasses.dataclass
    class Holder:
        counts: Counter
        pairs: tuple
        traj: object

    traj = make_traj()
    holder = Holder(Counter(a=2), (1, [2, 3]), traj)
    assert to_dict(holder) == dataclasses.asdict(holder)
    assert type(to_dict(holder)["counts"]) is Counter
    out = to_dict(traj)
    out["steps"][0]["tool_call"]["arguments"]["query"].append("changed")
    assert "changed" not in traj.steps[0].tool_call.arguments["query"]


def test_json_lines_are_valid_json_that_reads_back_as_written(tmp_path):
    """orjson's fast path, json where orjson refuses; NaN/inf (not JSON) become null instead of a token jq rejects."""
    text = "Python — 3.11\n\t\"quoted\" \u2028 日本語 \U0001F600"
    cases = [{"content": text, "n": 1, "f": 1e-07, "ok": True, "none": None, "args": {"query": ["a", "b"]}},
             {"big": 2**70}, {1: "int key"}]
    lines = [json_line(c) for c in cases]
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)
    assert "日本語".encode() in lines[0]  # UTF-8, not \u escapes
    assert [json.loads(line) for line in lines] == [cases[0], cases[1], {"1": "int key"}]
    assert json.loads(json_line({"loss": float("nan"), "inf": float("-inf")})) == {"loss": None, "inf": None}
    with JsonlAppender(tmp_path / "x.jsonl", key=None) as sink:
        sink.write_many(cases[:2])
        sink.write(cases[0])
    # Lines end at \n only (str.splitlines() would also split at the raw U+2028 inside the text).
    assert [json.loads(line) for line in (tmp_path / "x.jsonl").read_bytes().splitlines()] == [cases[0], cases[1], cases[0]]


def test_dataclass_records_are_written_as_to_dict_writes_them(tmp_path):
    """Dataclasses go to orjson one shallow dict at a time: the same bytes as the whole `to_dict` tree, fields whose
    name starts with "_" included (orjson's own dataclass output drops them), nested in dicts and lists too."""
    import dataclasses

    @dataclasses.dataclass
    class Private:
        _hidden: int = 1
        usage: Usage = dataclasses.field(default_factory=lambda: Usage(3, 4))

    traj = make_traj()
    traj.provenance = {"private": Private(), "list": [Private(), (1, 2)]}
    assert json_line(traj) == json_line(to_dict(traj))
    assert json.loads(json_line(traj))["provenance"]["private"] == {"_hidden": 1, "usage": {"prompt_tokens": 3, "completion_tokens": 4}}
    with JsonlAppender(tmp_path / "t.jsonl") as sink:
        sink.write(traj)
        assert traj.id in sink
    assert next(read_records(tmp_path / "t.jsonl", Trajectory)).provenance["private"]["_hidden"] == 1
