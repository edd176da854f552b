"""`webdancer data export`: a run's artifacts as a Hugging Face dataset folder that `datasets.load_dataset` reads
back record for record, with a card; `--push` without a token is refused with the folder kept."""

import json

import webdancer_data
from click.testing import CliRunner

from webdancer.cli import cli
from webdancer.jsonl import JsonlAppender

if "data" not in cli.commands:
    webdancer_data.register_commands(cli=cli)  # what `webdancer` (main) does through the entry point


def small_run(tmp_path):
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    qa = [{"question": f"Q{i}?", "answer": f"A{i}", "id": f"q{i}", "tag": "crawlqa", "hops": 2, "source_urls": [f"http://x/{i}"],
           "provenance": {"kind": "multi_hop", "groups": {"tag": "crawlqa"}}} for i in range(5)]
    (run / "qa_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa[:4]))
    (run / "qa_eval.jsonl").write_text(json.dumps(qa[4]) + "\n")
    with JsonlAppender(run / "trajectories_expert.jsonl") as sink:
        for i in range(3):
            sink.write({"id": f"t{i}", "question": f"Q{i}?", "messages": [{"role": "user", "content": f"Q{i}?"}],
                        "steps": [{"index": 0, "raw": "x", "tool_call": {"name": "search", "arguments": {"query": [f"q{i}"]}}},
                                  {"index": 1, "raw": "y", "tool_call": {"name": "visit", "arguments": {"url": [f"http://x/{i}"], "goal": "g"}}}],
                        "answer": f"A{i}", "termination": "answered", "question_id": f"q{i}", "started_at": "2026-11-28T12:00:00+00:00"})
    (run / "trajectories_expert.outages.jsonl").write_text("")
    (run / "kept_expert_report.json").write_text(json.dumps({"total": 3, "kept": 2, "dropped": {"validity": {"no_answer": 1}}}))
    (run / "rl").mkdir()
    tokens = [{"id": f"q{i}:0", "step": 1, "engine": "trl", "prompt": [{"role": "user", "content": f"Q{i}?"}], "prompt_ids": [1, 2, 3],
               "completion_ids": [4, 5, 6, 7], "loss_mask": [1, 1, 0, 1], "model_mask": [1, 1, 0, 1], "logprobs": [-0.5, -0.1, 0.0, -2.0] if i else None,
               "reward": 0.1 * i, "end": "answer", "question_id": f"q{i}"} for i in range(2)]
    (run / "rl" / "token_rollouts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in tokens))
    return run, qa


def test_a_run_exports_to_a_folder_load_dataset_reads_back(tmp_path):
    import datasets
    run, qa = small_run(tmp_path)
    out = tmp_path / "export"
    result = CliRunner().invoke(cli, ["data", "export", str(run), str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "qa: train 4, test 1" in result.output and "trajectories_expert: train 3" in result.output
    cache = str(tmp_path / "hf-cache")  # the shared cache can serve an older export from a reused pytest folder
    train = datasets.load_dataset(str(out), "qa", split="train", cache_dir=cache)
    # Record for record, nested fields included; provenance (keys differ by generator) is JSON text
    assert [{**r, "provenance": json.loads(r["provenance"])} for r in train] == qa[:4]
    trajectories = datasets.load_dataset(str(out), "trajectories_expert", split="train", cache_dir=cache)
    search, visit = (s["tool_call"] for s in trajectories[2]["steps"])
    # A plain reader sees each call's own arguments, not the union of every call's keys with nulls
    assert json.loads(search["arguments"]) == {"query": ["q2"]} and json.loads(visit["arguments"]) == {"url": ["http://x/2"], "goal": "g"}
    assert trajectories[2]["started_at"] == "2026-11-28T12:00:00+00:00"  # text as written, not a timestamp
    tokens = datasets.load_dataset(str(out), "rl_tokens", split="train", cache_dir=cache)  # RL rollouts as trained, token for token
    assert [r["completion_ids"] for r in tokens] == [[4, 5, 6, 7]] * 2 and tokens[1]["logprobs"] == [-0.5, -0.1, 0.0, -2.0]
    assert tokens[0]["logprobs"] is None and tokens[1]["loss_mask"] == [1, 1, 0, 1]
    card = (out / "README.md").read_text()
    assert "config_name: qa" in card and "path: qa/test-*.parquet" in card and "license: other" in card
    assert "`arguments`, `tools`, `provenance`" in card and "JSON text" in card
    assert "generator: webdancer" in card and "config hash" in card and "PSF-2.0" in card and "GFDL-1.1-or-later" in card
    assert 'expert: kept 2 of 3; dropped {"validity": {"no_answer": 1}}' in card
    again = CliRunner().invoke(cli, ["data", "export", str(run), str(out)])
    assert again.exit_code == 2 and "already holds files" in again.output  # never overwritten


def test_one_file_exports_and_push_needs_a_token(tmp_path, monkeypatch):
    run, _ = small_run(tmp_path)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    result = CliRunner().invoke(cli, ["data", "export", str(run / "qa_train.jsonl"), str(tmp_path / "one"), "--push", "me/qa"])
    assert result.exit_code == 2 and "set HF_TOKEN" in result.output and "is ready" in result.output
    assert (tmp_path / "one" / "qa_train" / "train-00000-of-00001.parquet").is_file()
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = CliRunner().invoke(cli, ["data", "export", str(run / "qa_eval.jsonl"), str(tmp_path / "two"), "--push", "me/qa"])
    assert offline.exit_code == 2 and "--push me/qa: the upload failed" in offline.output and "ready to push again" in offline.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n{"a": "x", "b": [1, {"c": 2}]}\n{oops\n')
    broken = CliRunner().invoke(cli, ["data", "export", str(bad), str(tmp_path / "three")])
    assert broken.exit_code == 2 and "bad.jsonl:3: not valid JSON" in broken.output and "repair or remove that line" in broken.output


def test_exported_and_hub_datasets_feed_sample_and_eval(plugins, tmp_path, monkeypatch):
    """An export folder (`#qa`, split test) is a QA input; a Hub copy in the local cache is an eval set."""
    import datasets
    from test_eval import scripted_model

    from webdancer.datasources import read_qa
    from webdancer.evalsets import load_eval_set
    from webdancer.testing.fake_openai import FakeOpenAIServer

    run, qa = small_run(tmp_path)
    out = tmp_path / "export"
    assert CliRunner().invoke(cli, ["data", "export", str(run), str(out)]).exit_code == 0
    items = read_qa(f"{out}#qa", "train")
    assert [(i.id, i.question, i.answer, i.hops) for i in items] == [(r["id"], r["question"], r["answer"], 2) for r in qa[:4]]
    wrong = CliRunner().invoke(cli, ["sample", f"{out}#qa", "--split", "validation", f"run.root={tmp_path}"])
    assert wrong.exit_code == 2 and "no split 'validation'; it has train, test" in wrong.output

    # WebWalkerQA as `datasets` saves it (lower-case fields): a folder with its data file, read as the benchmark.
    hub_copy = tmp_path / "WebWalkerQA"
    datasets.Dataset.from_list([{"question": "Who invented the integrated circuit in 1958?", "answer": "Jack Kilby",
                                 "root_url": "http://127.0.0.1:8765/foldoc/", "info": {"type": "single_source", "difficulty_level": "easy",
                                 "domain": "dictionary", "lang": "en", "source_website": [], "golden_path": []}}]).to_parquet(str(hub_copy / "main.parquet"))
    [walker] = load_eval_set(str(hub_copy), split="train")
    assert walker.answer == "Jack Kilby" and walker.provenance["groups"]["difficulty"] == "easy"
    scripted_model.xilinx = 0
    with FakeOpenAIServer(default=scripted_model) as srv:
        result = CliRunner().invoke(cli, ["eval", "run", str(hub_copy), "--split", "train", f"run.root={tmp_path}", "run.name=t",
                                          f"model.base_url={srv.base_url}", "model.model=m", "agent.tools=[lookup]", "agent.max_turns=3"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "t" / "eval" / "WebWalkerQA-m" / "results.json").read_text())["overall"]["pass_at_1"] == 1.0
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = CliRunner().invoke(cli, ["eval", "run", "hf:nobody/no-such-set", f"run.root={tmp_path}"])
    assert missing.exit_code == 2 and "hf:nobody/no-such-set: cannot be opened as a dataset" in missing.output


def test_exported_datasets_feed_rl_prepare_and_sft_export_as_the_files_do(tmp_path, expert_trajectories):
    """`rl prepare OUT#qa` and `sft export OUT#kept` give what the run's own files give: the round trip through
    parquet keeps every record, and a visit call does not come back with the null `query` parquet adds."""
    import shutil

    import pyarrow.parquet as pq

    from webdancer.plugins import get_plugins

    get_plugins().add_commands(cli)  # `rl` and `sft`, as `webdancer` (main) adds them
    run, _ = small_run(tmp_path)
    (run / "trajectories_expert.jsonl").unlink()
    shutil.copy(expert_trajectories, run / "kept.jsonl")
    kinds = {s["tool_call"]["name"] for line in (run / "kept.jsonl").read_text().splitlines() for s in json.loads(line)["steps"] if s.get("tool_call")}
    assert kinds == {"search", "visit"}  # both argument shapes in one column
    out = tmp_path / "export"
    assert CliRunner().invoke(cli, ["data", "export", str(run), str(out)]).exit_code == 0

    for source, target in ((str(run / "kept.jsonl"), "from_file"), (f"{out}#kept", "from_dataset")):
        result = CliRunner().invoke(cli, ["sft", "export", source, str(tmp_path / target)])
        assert result.exit_code == 0, result.output
    from_file = json.loads((tmp_path / "from_file" / "webdancer_sft.json").read_text())
    assert from_file and json.loads((tmp_path / "from_dataset" / "webdancer_sft.json").read_text()) == from_file

    rows = {}
    for source, name in ((str(run / "qa_train.jsonl"), "f"), (f"{out}#qa", "d")):
        args = ["rl", "prepare", source, f"run.root={tmp_path / name}", "run.name=r", "agent.current_date=2026-11-24"]
        result = CliRunner().invoke(cli, args + (["--split", "train"] if name == "d" else []))
        assert result.exit_code == 0, result.output
        rows[name] = [pq.read_table(tmp_path / name / "r" / "rl_data" / f).to_pylist() for f in ("train.parquet", "val.parquet")]
    assert rows["d"] == rows["f"] and sum(map(len, rows["f"])) == 4

    missing = CliRunner().invoke(cli, ["sft", "export", str(tmp_path / "nothing.jsonl"), str(tmp_path / "x")])
    assert missing.exit_code == 2 and "no such file, dataset folder or hf: dataset" in missing.output
    wrong = CliRunner().invoke(cli, ["sft", "export", f"{out}#qa", str(tmp_path / "y"), "--split", "train"])
    assert wrong.exit_code == 2 and "a trajectory dataset needs the fields question and steps" in wrong.output


def test_an_empty_split_is_written_with_its_columns_and_exported(tmp_path):
    """rl.val_fraction=0: val.parquet has no rows but train's columns; the export lists the split with 0 rows."""
    import datasets
    import pyarrow.parquet as pq

    from webdancer.plugins import get_plugins

    get_plugins().add_commands(cli)
    run, _ = small_run(tmp_path)
    args = ["rl", "prepare", str(run / "qa_train.jsonl"), f"run.root={run.parent}", "run.name=r", "agent.current_date=2026-12-07", "rl.val_fraction=0"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    train, val = (pq.read_table(run / "rl_data" / f) for f in ("train.parquet", "val.parquet"))
    assert train.num_rows == 4 and val.num_rows == 0 and val.schema == train.schema
    out = tmp_path / "export"
    result = CliRunner().invoke(cli, ["data", "export", str(run), str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "rl: train 4, validation 0 (empty: no file written)" in result.output
    rl = datasets.load_dataset(str(out), "rl", cache_dir=str(tmp_path / "hf-cache"))
    assert list(rl) == ["train"] and rl["train"].num_rows == 4  # `datasets` cannot read a 0-row parquet file: no split
    assert "| rl | validation | 0 (empty: no file) |" in (out / "README.md").read_text()
