"""The GPU recipes' SFT on one lent GPU, where CI cannot go: LLaMA-Factory, full fine-tuning, bf16, gradient
checkpointing and DeepSpeed ZeRO-3 (configs/deepspeed/ds_z3_config.json), from the YAML `webdancer sft train` writes
for configs/gpu-qwen2.5-7b.yaml, launched by `llamafactory-cli train` under torchrun as the recipe's launch sets it.

A lent machine has torch (2.11, CUDA), transformers, accelerate and peft, but no LLaMA-Factory, DeepSpeed or network,
and takes at most 64 MiB of files; the tiny model's weights are bigger than that. So the check comes in two halves:

    here:   .venv/bin/python scripts/device_check_sft.py prepare .devcheck-sft
            (the SFT lock's wheels LLaMA-Factory needs, without torch and CUDA, which the machine has, and with the
            torchaudio of the machine's torch; DeepSpeed built into a wheel here; SmolLM2-135M's config and tokenizer
            without weights; the reference trajectories exported as the SFT dataset; the recipe's YAML)
    there:  python scripts/device_check_sft.py run .devcheck-sft $OUT
            (the bundle installed into a folder put first on PYTHONPATH, over the machine's torch and CUDA; the same
            architecture randomly initialised; `llamafactory-cli train` for a few steps; asserts and a summary.json)

`prepare --torch VERSION` carries the torchaudio of another torch. On a CPU `run` trains with `use_cpu` and without
DeepSpeed (its engine needs an accelerator): that is how the script is rehearsed before device time is spent.
Rehearsed 2026-12-06: `prepare --torch 2.9.1` (55 MiB, 74 wheels), `run` with .venvs/sft's Python (3 steps, 187 s on 2
cores, a loadable checkpoint); and LLaMA-Factory's training modules import from the bundle over an environment
holding only torch (2.13, CPU), transformers 5.17, accelerate, peft and pyarrow (torchaudio stood in: PyPI has none
for a CPU torch). What it cannot cover: several GPUs or nodes (ZeRO-3 shards over
one GPU here), the recipes' 7B/32B models and 32k-token sequences (memory), the lock's torch 2.9.1 (the machine's is
used), and a machine whose Python is not 3.11 (the carried wheels are cp311).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
# What the lent machine has (../shared/TRAINERS.md) or the training does not import: not carried.
NOT_CARRIED = ("torch", "torchvision", "torchaudio", "triton", "numpy", "sympy", "networkx", "jinja2", "markupsafe", "mpmath",
               "setuptools", "gradio", "gradio-client", "av", "matplotlib", "scipy", "modelscope",
               "fonttools", "kiwisolver", "contourpy", "pillow", "uvicorn", "fastapi", "starlette", "sse-starlette",
               "websockets", "orjson", "ruff", "pydub", "python-multipart", "groovy", "semantic-version", "ffmpy",
               "safehttpx", "tomlkit", "brotli", "pyarrow", "hf-transfer", "hf-xet", "cryptography", "cffi", "pycparser", "modelscope-hub")
DEVICE_TORCH = "2.11.0"  # the lent machine's torch (TRAINERS.md): its torchaudio is carried (LLaMA-Factory imports it)
STEPS = 3


def lock_pins() -> dict[str, str]:
    lines = (ROOT / "scripts" / "locks" / "sft.txt").read_text().splitlines()
    return dict(line.split("==", 1) for line in lines if "==" in line and not line.startswith("#"))


def prepare(bundle: Path, torch_version: str = DEVICE_TORCH) -> None:
    model = ROOT / ".webdancer/models/smollm2-135m"
    if not (model / "config.json").is_file():
        sys.exit(f"{model} is missing: run `webdancer model export smollm2-135m {model}`")
    wheels = bundle / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pins = lock_pins()
    wanted = [f"{name}=={version}" for name, version in pins.items() if name not in NOT_CARRIED and not name.startswith("nvidia-")
              and name != "deepspeed"]
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels)]
    done = subprocess.run([*pip, *wanted, f"torchaudio=={torch_version}"], capture_output=True, text=True)
    # DeepSpeed is a source archive whose setup.py imports torch: built into a pure-Python wheel here (no ops compiled).
    ds = subprocess.run([*pip, "--no-build-isolation", f"deepspeed=={pins['deepspeed']}"], capture_output=True, text=True,
                        env={**os.environ, "DS_BUILD_OPS": "0"})
    for proc in (done, ds):
        if proc.returncode != 0:
            sys.exit(f"pip wheel failed (run prepare with the SFT environment's Python, .venvs/sft/bin/python):\n{proc.stderr[-3000:]}")
    (bundle / "model").mkdir(exist_ok=True)
    for name in MODEL_FILES:
        if (model / name).is_file():
            shutil.copy2(model / name, bundle / "model" / name)
    sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]
    from webdancer_sft.export import export_sft

    export_sft(ROOT.parent / "shared" / "reference" / "sample_traj.jsonl", bundle / "data")
    shutil.copy2(ROOT / "configs" / "deepspeed" / "ds_z3_config.json", bundle / "ds_z3_config.json")
    (bundle / "train.json").write_text(json.dumps(recipe_yaml(), indent=1))
    size = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file()) / 2**20
    print(f"prepared {bundle}: {size:.1f} MiB, {len(list(wheels.glob('*.whl')))} wheels")
    if size > 60:
        sys.exit(f"{bundle} is {size:.1f} MiB: more than a lent machine takes (64 MiB with the script)")


def recipe_yaml() -> dict:
    """The YAML `webdancer sft train` writes for the 7B recipe, with placeholders for this check's paths and a few
    steps of short sequences (the tiny architecture, one GPU)."""
    sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]
    from webdancer_sft.train import llamafactory_yaml

    from webdancer.config_loader import load_config

    cwd = Path.cwd()
    os.chdir(ROOT)
    try:
        sft = load_config(str(ROOT / "configs" / "gpu-qwen2.5-7b.yaml"), ["sft.max_steps=3", "sft.cutoff_len=2048", "sft.save_steps=3",
                                                                         "sft.gradient_accumulation_steps=2"]).sft
        doc = llamafactory_yaml(sft, Path("DATA"), Path("OUT"))
    finally:
        os.chdir(cwd)
    doc.update({"model_name_or_path": "MODEL", "deepspeed": "DEEPSPEED", "report_to": "none", "plot_loss": False})
    return doc


def run(bundle: Path, out: Path) -> dict:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.perf_counter()
    # The SFT lock's LLaMA-Factory stack, first on sys.path, over the machine's torch and CUDA (its scripts: bin/).
    overlay = work / "overlay"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "-q", "--target", str(overlay),
                    *map(str, sorted((bundle / "wheels").glob("*.whl")))], check=True)
    install_s = time.perf_counter() - started
    torch.manual_seed(0)
    model_dir = work / "model"
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(bundle / "model"), dtype=torch.float32).save_pretrained(model_dir)
    for name in MODEL_FILES[1:]:
        if (bundle / "model" / name).is_file():
            shutil.copy2(bundle / "model" / name, model_dir / name)
    doc = json.loads((bundle / "train.json").read_text())
    doc.update({"model_name_or_path": str(model_dir), "dataset_dir": str(bundle / "data"), "output_dir": str(work / "sft"),
                "deepspeed": str(bundle / "ds_z3_config.json")})
    cuda = torch.cuda.is_available()
    if not cuda:  # the CPU rehearsal: DeepSpeed's engine needs an accelerator
        doc.update({"use_cpu": True, "bf16": False})
        doc.pop("deepspeed")
    config = work / "train.yaml"
    config.write_text(json.dumps(doc))  # JSON is YAML
    # torchrun: the machine's own, beside its python (LLaMA-Factory's launcher starts it by name)
    path = os.pathsep.join([str(overlay / "bin"), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(overlay), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep), "PATH": path,
           "FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DISABLE_VERSION_CHECK": "1"}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "llamafactory.cli", "train", str(config)], env=env, capture_output=True, text=True)
    train_s = time.perf_counter() - started
    (out / "train.log").write_text(proc.stdout + proc.stderr)
    log = [json.loads(line) for line in (work / "sft" / "trainer_log.jsonl").read_text().splitlines()] if proc.returncode == 0 else []
    losses = [row["loss"] for row in log if "loss" in row]
    summary = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__, "returncode": proc.returncode,
        "deepspeed": doc.get("deepspeed") is not None, "bf16": doc.get("bf16"), "install_s": round(install_s, 1),
        "train_s": round(train_s, 1), "losses": losses, "log_tail": (proc.stdout + proc.stderr).splitlines()[-15:],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    assert proc.returncode == 0, "llamafactory-cli train failed: see train.log"
    assert len(losses) == STEPS and all(loss == loss for loss in losses), f"losses {losses}"
    reloaded = AutoModelForCausalLM.from_pretrained(work / "sft")  # ZeRO-3 gathers the 16-bit weights on save
    assert reloaded.config.model_type == "llama"
    return summary


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "prepare":
        prepare(Path(argv[1]).resolve(), argv[argv.index("--torch") + 1] if "--torch" in argv else DEVICE_TORCH)
        return 0
    if len(argv) >= 3 and argv[0] == "run":
        run(Path(argv[1]).resolve(), Path(argv[2]).resolve())
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
