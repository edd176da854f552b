"""The benchmarks' files as their releases and `datasets` copies spell them: WebWalkerQA's Hugging Face copy,
GAIA's splits and attachments, xbench-DeepSearch's and BrowseComp-zh's encrypted releases."""

import base64
import csv
import json

import pytest

from webdancer.evalsets import EvalSetError, detect_format, encrypt, load_eval_set

CANARY = "BENCHMARK DATA SHOULD NEVER APPEAR AS PLAIN TEXT ONLINE. canary GUID test:0000"


def test_webwalkerqa_as_its_hugging_face_copy_writes_it(tmp_path):
    # `load_dataset("callanwu/WebWalkerQA", split="main").to_json(...)`: lower-case fields, one record per line.
    # A question holding U+2028 raw, as `to_json` (ensure_ascii=False) and JSON allow: still one line.
    rows = [{"question": "Which company invented the FPGA?\u2028", "answer": "Xilinx", "root_url": "http://127.0.0.1:8765/foldoc/",
             "info": {"type": "multi_source", "difficulty_level": "hard", "domain": "dictionary", "lang": "en",
                      "source_website": ["http://127.0.0.1:8765/foldoc/xilinx.html"], "golden_path": ["root->xilinx"]}}]
    path = tmp_path / "webwalkerqa_main.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    assert detect_format(path) == "webwalkerqa"
    [item] = load_eval_set(path)
    assert item.question.endswith("\u2028") and item.answer == "Xilinx" and item.provenance["root_url"] == "http://127.0.0.1:8765/foldoc/"
    assert item.provenance["groups"] == {"type": "multi_source", "difficulty": "hard", "domain": "dictionary", "language": "en"}
    assert item.source_urls == ["http://127.0.0.1:8765/foldoc/xilinx.html"]
    path.write_text(json.dumps({"question": "Q?", "answer": "A", "info": {}}) + "\n")
    with pytest.raises(EvalSetError, match=r"webwalkerqa_main.jsonl:1: WebWalkerQA record lacks field 'Root_Url'.*any case"):
        load_eval_set(path, "webwalkerqa")


def test_gaia_validation_attachments_and_the_test_split(tmp_path):
    record = {"task_id": "t1", "Question": "What is in the file?", "Level": "2", "Final answer": "42", "file_name": "t1.xlsx",
              "file_path": "2023/validation/t1.xlsx", "Annotator Metadata": {"Steps": "..."}}
    path = tmp_path / "metadata.jsonl"
    path.write_text(json.dumps(record) + "\n")
    [item] = load_eval_set(path)
    assert item.id == "t1" and item.answer == "42" and item.provenance["file_path"] == str(tmp_path / "t1.xlsx")
    path.write_text(json.dumps({**record, "Final answer": "?"}) + "\n")  # the test split as released
    [item] = load_eval_set(path)
    assert item.answer == "" and item.provenance["answer_withheld"] is True


def test_gaias_test_split_is_answered_into_a_leaderboard_submission_not_scored(plugins, tmp_path):
    from click.testing import CliRunner
    from test_eval import GAIA, eval_args, scripted_model

    from webdancer.cli import cli
    from webdancer.testing.fake_openai import FakeOpenAIServer

    test_split = tmp_path / "test" / "metadata.jsonl"
    test_split.parent.mkdir()
    records = [json.loads(line) for line in GAIA.read_text().splitlines()]
    records[2]["Final answer"] = "?"  # one question of the test split (Kilby's) among two of validation
    test_split.write_text("".join(json.dumps(r) + "\n" for r in records))
    scripted_model.xilinx = 0
    with FakeOpenAIServer(default=scripted_model) as srv:
        args = eval_args(tmp_path, srv, "--name", "mixed")
        args[2] = str(test_split)
        result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    out = tmp_path / "t" / "eval" / "mixed"
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] is True and results["overall"]["questions"] == 2  # the withheld one is not scored
    assert results["withheld"] == {"questions": 1, "answered": 1, "submission": str(out / "submission.jsonl")}
    [line] = [json.loads(x) for x in (out / "submission.jsonl").read_text().splitlines()]
    assert line == {"task_id": records[2]["task_id"], "model_answer": "It was **Jack Kilby**.", "reasoning_trace": "I should search. Found it."}
    assert "answers withheld by the benchmark: 1 questions" in (out / "report.md").read_text()


def xbench_encrypt(text, canary):
    """xbench-evals' scheme, written from its definition: XOR with the canary's bytes, then base64."""
    key = canary.encode()
    return base64.b64encode(bytes(b ^ key[i % len(key)] for i, b in enumerate(text.encode()))).decode()


def test_xbench_deepsearch_csv_decrypts_per_row(tmp_path):
    path = tmp_path / "DeepSearch.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "prompt", "answer", "reference_steps", "canary"])
        writer.writerow(["1", xbench_encrypt("哪家公司发明了FPGA？", CANARY), xbench_encrypt("赛灵思", CANARY), xbench_encrypt("步骤", CANARY), CANARY])
        writer.writerow(["2", xbench_encrypt("Who invented the IC?", CANARY + "x"), xbench_encrypt("Jack Kilby", CANARY + "x"), "", CANARY + "x"])
    assert detect_format(path) == "xbench"
    items = load_eval_set(path)
    assert [(i.id, i.question, i.answer) for i in items] == [
        ("xbench-DeepSearch-1", "哪家公司发明了FPGA？", "赛灵思"), ("xbench-DeepSearch-2", "Who invented the IC?", "Jack Kilby")]
    assert "赛灵思" not in path.read_text(encoding="utf-8")
    # (XOR cannot tell a wrong canary from a right one on ASCII text; a cell that is not ciphertext it can.)
    path.write_text(path.read_text(encoding="utf-8").replace(xbench_encrypt("Jack Kilby", CANARY + "x"), "Jack Kilby!"), encoding="utf-8")
    with pytest.raises(EvalSetError, match=r"DeepSearch.csv:3: the encrypted fields do not decrypt with this row's canary"):
        load_eval_set(path)


def test_browsecomp_zh_workbook_decrypts_topic_question_and_answer(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["Topic", "Question", "Answer", "canary"])
    sheet.append([encrypt("科技", CANARY), encrypt("谁发明了集成电路？", CANARY), encrypt("杰克·基尔比", CANARY), CANARY])
    sheet.append([None, None, None, None])  # a blank row at the end, as spreadsheets keep them
    path = tmp_path / "browsecomp-zh-encrypted.xlsx"
    book.save(path)
    assert detect_format(path) == "browsecomp-zh"
    [item] = load_eval_set(path)
    assert (item.question, item.answer, item.provenance["groups"]) == ("谁发明了集成电路？", "杰克·基尔比", {"topic": "科技"})
    bad = tmp_path / "other.xlsx"
    bad.write_text("not a workbook")
    with pytest.raises(EvalSetError, match="other.xlsx: not a readable .xlsx workbook"):
        load_eval_set(bad)
