"""TRL with rollouts through vLLM (`rl.trl_rollouts=vllm`): the TRL engine in vLLM's environment (.venvs/vllm, with
third_party_patches/trl), vLLM colocated in the trainer's process on the CPU, the policy's weights synced into it at
every step, our multi-turn rollouts, tools and rewards."""

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from test_rl_engine import QA, trl_run
from toolkit import VowelShare

from webdancer.cli import cli
from webdancer.config_loader import load_config
from webdancer.errors import ConfigError
from webdancer.plugins import get_plugins

get_plugins().add_commands(cli)
ROOT = Path(__file__).resolve().parents[1]
VLLM = ROOT / ".venvs" / "vllm"


@pytest.mark.parametrize("package, patch", [("trl", "0001-vllm-colocate-on-cpu.patch"),
                                            ("vllm", "0001-kernel-rebind-reads-only-real-instance-dicts.patch")])
def test_our_patches_apply_to_the_packages_in_vllms_environment(package, patch):
    """scripts/setup_vllm.sh applied them; this fails when a release moves and a patch no longer fits."""
    out = subprocess.run(["bash", "scripts/apply_patches.sh", "--check", package, str(VLLM / "bin" / "python")], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0 and f"applied already: third_party_patches/{package}/{patch}" in out.stdout, out.stdout + out.stderr


def test_vllm_settings_for_trl(tmp_path):
    from webdancer_rl.trl_engine import check_trl_options, grpo_settings, rollout_generation

    cfg = load_config(None, ["rl.trl_rollouts=vllm", "rl.max_prompt_length=2048", "rl.max_response_length=512", "rl.trl={top_k: 20}"])
    cpu, gpu = grpo_settings(cfg, tmp_path, cpu=True), grpo_settings(cfg, tmp_path)
    assert (cpu["use_vllm"], cpu["vllm_mode"], cpu["vllm_max_model_length"], cpu["vllm_dtype"]) == (True, "colocate", 2560, "float32")
    assert "vllm_dtype" not in gpu  # vLLM's auto: the model's own dtype on a GPU
    from trl import GRPOConfig

    on_gpu = GRPOConfig(**gpu, use_cpu=True)  # TRL's own parser takes the one-GPU settings (use_cpu: no device check here)
    assert (on_gpu.use_vllm, on_gpu.vllm_mode, on_gpu.vllm_max_model_length) == (True, "colocate", 2560)
    assert rollout_generation(cfg, cpu, gpu=False) == "vllm" == rollout_generation(cfg, gpu, gpu=True)  # top_k: vLLM samples it
    check_trl_options({"vllm_dtype": "bfloat16"})  # our patch's field, accepted where the core's TRL lacks it
    for options, said in (({"use_vllm": True}, "rl.trl_rollouts=vllm"), ({"vllm_mode": "server"}, "colocated")):
        with pytest.raises(ConfigError, match=said):
            check_trl_options(options)


VOWELS_PLUGIN = {
    "pyproject.toml": """[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"
[project]
name = "webdancer-vowels-reward"
version = "0.1.0"
[project.entry-points.webdancer]
vowels_reward = "webdancer_vowels_reward"
[tool.setuptools]
py-modules = ["webdancer_vowels_reward"]
""",
    # tests/toolkit.py's reward, as its own module: the engine runs in another environment, where toolkit is not
    "webdancer_vowels_reward.py": "from webdancer import hookimpl\nfrom webdancer.rewards import Reward\n\n\n"
                                  + inspect.getsource(VowelShare)
                                  + "\n\n@hookimpl\ndef register_rewards(register):\n    register(VowelShare)\n",
}


@pytest.fixture
def vowels_reward_installed(tmp_path, monkeypatch):
    """tests/toolkit.py's graded `vowels` reward (every group of the untrained model has spread, so every step updates
    the policy) as a package on PYTHONPATH, for the engine in vLLM's environment."""
    source, site = tmp_path / "vowels-src", tmp_path / "vowels-site"
    source.mkdir()
    for name, text in VOWELS_PLUGIN.items():
        (source / name).write_text(text)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(source)], check=True,
                   capture_output=True)
    monkeypatch.setenv("PYTHONPATH", str(site))


@pytest.mark.slow
def test_two_grpo_steps_with_vllm_rollouts_sample_from_the_policy_being_trained(plugins, vowels_reward_installed, local_web, tiny_model,
                                                                                   tmp_path):
    """`webdancer rl train` with rl.trl_rollouts=vllm: two steps at a high learning rate. The importance ratios (the
    policy's probability of each sampled token over vLLM's, per rollout) stay within 1% of 1 at both steps, so vLLM
    generates in the policy's dtype and the second step samples from the updated weights: a sync that missed a layer
    (the output head tied to the embeddings) gave 0.79-0.95 at the second step, bf16 0.56-1.27."""
    web, _, _ = local_web
    run, qa = trl_run(tmp_path, web, tiny_model, QA, "rl.total_training_steps=2", "rl.trl_rollouts=vllm", "serve.kv_cache_tokens=8192",
                      "rl.filter_groups_metric=score", "rewards={vowels: {weight: 1.0}}", "rl.train_batch_size=1",
                      "rl.ppo_mini_batch_size=1")
    assert CliRunner().invoke(cli, ["rl", "prepare", str(qa), *run]).exit_code == 0
    result = CliRunner().invoke(cli, ["rl", "train", *run])
    assert result.exit_code == 0, result.output
    assert "rollout turns: TRL's vLLM in this process, synced each step (rl.trl_rollouts=vllm)" in result.output
    out = tmp_path / "r" / "rl"
    command = (out / "command.sh").read_text()
    assert str(VLLM / "bin" / "python") in command and "VLLM_CPU_KVCACHE_SPACE=" in command
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert r["filtered_groups"] == 0.0 and r["grad_norm"] > 0 and 0 < r["reward/vowels/mean"] < 1, r
        assert 0.99 < r["importance_ratio/min"] <= r["importance_ratio/max"] < 1.01 and r["importance_ratio/min"] != 1.0, r
        assert r["turns/mean"] >= 1 and r["response_length/mean"] <= 160
    before, after = load_file(tiny_model / "model.safetensors"), load_file(out / "model" / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_a_missing_vllm_environment_or_a_cache_too_big_is_refused_before_training(local_web, tiny_model, tmp_path):
    web, _, _ = local_web
    run, qa = trl_run(tmp_path, web, tiny_model, QA, "rl.total_training_steps=1", "rl.trl_rollouts=vllm")
    assert CliRunner().invoke(cli, ["rl", "prepare", str(qa), *run]).exit_code == 0
    bad = CliRunner().invoke(cli, ["rl", "train", *run, f"rl.vllm_venv={tmp_path / 'nowhere'}"])
    assert bad.exit_code != 0 and "rl.trl_rollouts=vllm" in bad.output and "rl.vllm_venv" in bad.output, bad.output
    assert "scripts/setup_vllm.sh" in bad.output
    bad = CliRunner().invoke(cli, ["rl", "train", *run, "serve.kv_cache_tokens=2000000000"])
    assert bad.exit_code == 2 and "serve.kv_cache_tokens=2000000000" in bad.output and "VLLM_CPU_KVCACHE_SPACE" in bad.output, bad.output
    assert not (tmp_path / "r" / "rl" / "metrics.jsonl").exists()  # nothing started
