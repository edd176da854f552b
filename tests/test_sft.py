"""Stage 3: trajectories -> LLaMA-Factory dataset, checked with LLaMA-Factory's own loader, and a real CPU SFT run."""

import json

import pytest
import yaml
from webdancer_models.cpu_linear import bf16_supported
from webdancer_sft.config import SftConfig
from webdancer_sft.export import export_sft
from webdancer_sft.train import inspect_dataset, run_training

from webdancer.errors import RecordError, WebdancerError
from webdancer.jsonl import read_records
from webdancer.records import Trajectory


def test_export_shape(expert_trajectories, tmp_path):
    stats = export_sft(expert_trajectories, tmp_path)
    records = json.loads((tmp_path / "webdancer_sft.json").read_text())
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    trajs = list(read_records(expert_trajectories, Trajectory))
    assert stats.exported == len(records) == len(trajs) > 0
    assert info["webdancer_sft"]["formatting"] == "sharegpt" and "tools" not in info["webdancer_sft"]["columns"]
    for rec, traj in zip(records, trajs):
        roles = [t["from"] for t in rec["conversations"]]
        assert roles[0] == "human" and roles[-1] == "gpt" and len(roles) % 2 == 0
        assert all(r == "gpt" for r in roles[1::2]) and all(r == "observation" for r in roles[2::2])
        assert rec["system"] == traj.messages[0].content
        obs = [t["value"] for t in rec["conversations"] if t["from"] == "observation"]
        assert obs == [s.tool_result.content for s in traj.steps if s.tool_result]  # unwrapped, not re-wrapped


def test_reference_release_exports(reference_dir, tmp_path):
    stats = export_sft(reference_dir / "sample_traj.jsonl", tmp_path)
    assert stats.exported == 150 and not stats.skipped


def test_export_streams_records_in_constant_memory_and_keeps_the_old_file_on_failure(reference_dir, tmp_path):
    """A 3,000-trajectory file (~40x the reference sample) exports with the Python heap's peak far below the file's
    size (one record at a time, not a list of all and one string of all); a failed export leaves the last one."""
    import tracemalloc

    lines = (reference_dir / "sample_traj.jsonl").read_text().splitlines()
    big = tmp_path / "big.jsonl"
    with big.open("w") as fh:
        for n in range(3000):
            obj = json.loads(lines[n % len(lines)])
            obj["id"] = f"copy-{n}"
            fh.write(json.dumps(obj) + "\n")
    tracemalloc.start()
    try:
        stats = export_sft(big, tmp_path / "out")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stats.exported == 3000 and peak < big.stat().st_size / 10, (peak, big.stat().st_size)
    records = json.loads((tmp_path / "out" / "webdancer_sft.json").read_text())
    assert len(records) == 3000 and all(r["conversations"] == records[n % len(lines)]["conversations"] for n, r in enumerate(records))
    (tmp_path / "none.jsonl").write_text("")
    with pytest.raises(WebdancerError, match="no trajectory could be exported"):
        export_sft(tmp_path / "none.jsonl", tmp_path / "out")
    assert len(json.loads((tmp_path / "out" / "webdancer_sft.json").read_text())) == 3000
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dataset_info.json", "webdancer_sft.json"]  # no temporary left


def test_bad_input_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(WebdancerError, match="no trajectory could be exported"):
        export_sft(empty, tmp_path / "out")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "x", "question": "q"}\n')
    with pytest.raises(RecordError, match=r"broken.jsonl:1: .*'messages'"):
        export_sft(broken, tmp_path / "out")


def test_llamafactory_loader_masks_observations_and_renders_the_inference_text(expert_trajectories, tiny_model, sft_venv, tmp_path):
    from transformers import AutoTokenizer

    export_sft(expert_trajectories, tmp_path)
    report = inspect_dataset(SftConfig(model_path=str(tiny_model), venv=str(sft_venv), cutoff_len=4096), tmp_path)
    trajs = list(read_records(expert_trajectories, Trajectory))
    assert report["kept"] == report["in_file"] == len(trajs)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    for example, traj in zip(report["examples"], trajs):
        inference = tok.apply_chat_template([{"role": m.role, "content": m.content} for m in traj.messages], tokenize=False)
        assert example["text"] == inference  # what LLaMA-Factory trains on is what the agent sends
        for msg in traj.messages[2:]:
            if msg.role == "assistant":
                assert msg.content + "<|im_end|>" in example["trained"]
            else:
                assert msg.content not in example["trained"]  # observations are masked (labels -100)
        assert traj.messages[1].content not in example["trained"] and traj.messages[0].content not in example["trained"]
        assert 0 < example["trained_tokens"] < example["tokens"]


def test_cpu_sft_run_under_torchrun_writes_a_loadable_checkpoint(cpu_sft_run, tiny_model, sft_venv):
    """A real LLaMA-Factory run (conftest.cpu_sft_run), launched under torchrun as on a node with several GPUs or with
    DeepSpeed, with another environment's `torchrun` first on the caller's PATH: the SFT environment's runs."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result, lines, out = cpu_sft_run["result"], cpu_sft_run["lines"], cpu_sft_run["out"]
    cfg, data = cpu_sft_run["cfg"].sft, cpu_sft_run["data"]
    assert len(result["losses"]) == 2 and all(loss > 0 for loss in result["losses"])
    assert not cpu_sft_run["wrong_torchrun"].exists() and any("Initializing 1 distributed tasks" in line for line in lines)
    script = (out / "command.sh").read_text()
    assert script.strip().endswith(f"train {out / 'llamafactory_train.yaml'}") and f'export PATH={sft_venv.absolute() / "bin"}:"$PATH"' in script
    assert any("are trained on" in line for line in lines)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.model_type == "llama"
    # On a CPU with native bf16 (this one, when it has AVX512-BF16 or AMX) the run used bf16 autocast; the checkpoint
    # is fp32 either way, as the fp32 servers and the next training expect.
    assert yaml.safe_load((out / "llamafactory_train.yaml").read_text()).get("bf16", False) == bf16_supported()
    assert json.loads((out / "config.json").read_text())["dtype"] == "float32"
    assert AutoTokenizer.from_pretrained(out).chat_template == AutoTokenizer.from_pretrained(tiny_model).chat_template
    with pytest.raises(WebdancerError, match="already holds a finished training"):
        run_training(cfg, data, out)


def test_missing_environment_is_named(tmp_path, expert_trajectories):
    export_sft(expert_trajectories, tmp_path)
    with pytest.raises(WebdancerError, match="setup_sft.sh"):
        inspect_dataset(SftConfig(venv=str(tmp_path / "no-venv")), tmp_path)


def test_cpu_training_uses_bf16_autocast_where_the_cpu_has_it(monkeypatch, tmp_path):
    """sft.cpu_autocast: auto turns LLaMA-Factory's bf16 on for a CPU run only where bf16 matmuls are native (1.5x a
    step measured); an explicit extra.bf16/fp16 decides instead; a GPU run (use_cpu false) is left to extra."""
    import webdancer_models.cpu_linear as cpu_linear
    from webdancer_sft.train import llamafactory_yaml

    def bf16(native, **fields):
        monkeypatch.setattr(cpu_linear, "bf16_supported", lambda: native)
        return llamafactory_yaml(SftConfig(**fields), tmp_path / "data", tmp_path / "out").get("bf16")

    assert bf16(True) is True and bf16(False) is None
    assert bf16(True, cpu_autocast="off") is None and bf16(False, cpu_autocast="bf16") is True
    assert bf16(True, extra={"bf16": False}) is False and bf16(True, extra={"fp16": True}) is None
    assert bf16(True, use_cpu=False) is None and bf16(True, use_cpu=False, extra={"bf16": True}) is True
