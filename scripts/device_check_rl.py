"""The one-machine RL engine (TRL's GRPOTrainer with our rollouts) on one GPU, where the CI cannot go.

A lent GPU machine has torch and transformers but no network, no webdancer install, and takes at
most 64 MiB of files; the tiny model's weights are bigger than that. So the check comes in two
halves:

    here:   python scripts/device_check_rl.py prepare .devcheck
            (SmolLM2-135M's config and tokenizer without weights, FOLDOC's dictd files, questions)
    there:  python scripts/device_check_rl.py run .devcheck $OUT
            (the same architecture, randomly initialised; a FOLDOC web built and served on loopback;
            `rl prepare`, then GRPO steps with rl.engine=trl; asserts and a summary.json)

A random model never calls a tool well, so the rewards are the test toolkit's graded `vowels` reward
(spread in every group) beside the format reward; the tool path itself is covered by the CPU tests.
`run` also works on a CPU (use_cpu), which is how this script is checked before device time is spent.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
FOLDOC = Path("/usr/share/dictd")
QUESTIONS = [
    ("What does the acronym FOLDOC stand for?", "Free On-line Dictionary of Computing"),
    ("Which language did Guido van Rossum create?", "Python"),
    ("What is the name of the sorting algorithm that repeatedly swaps adjacent elements?", "bubble sort"),
    ("Which company developed the C programming language's home operating system, Unix?", "Bell Labs"),
]


def prepare(bundle: Path) -> None:
    model = ROOT / ".webdancer/models/smollm2-135m"
    if not (model / "config.json").is_file():
        sys.exit(f"{model} is missing: run `webdancer models export smollm2-135m` (scripts/setup.sh does)")
    (bundle / "model").mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        if (model / name).is_file():
            shutil.copy2(model / name, bundle / "model" / name)
    (bundle / "foldoc").mkdir(exist_ok=True)
    for name in ("foldoc.index", "foldoc.dict.dz"):
        shutil.copy2(FOLDOC / name, bundle / "foldoc" / name)
    (bundle / "qa.jsonl").write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in QUESTIONS))
    print(f"prepared {bundle}: {sum(f.stat().st_size for f in bundle.rglob('*') if f.is_file()) / 2**20:.1f} MiB")


def run(bundle: Path, out: Path, steps: int = 2) -> dict:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    sys.path.insert(0, str(ROOT / "tests"))
    import toolkit  # the test plugin with the graded `vowels` reward
    from webdancer_rl.prepare import prepare as rl_prepare
    from webdancer_rl.trl_engine import train
    from webdancer_web.build import build_web
    from webdancer_web.config import SiteConfig
    from webdancer_web.server import LocalWebServer

    from webdancer.config_loader import load_config
    from webdancer.plugins import Plugins, set_plugins
    from webdancer.records import QAItem

    reg = Plugins()
    reg.register(toolkit, name="test-toolkit")
    set_plugins(reg)
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    torch.manual_seed(0)
    model_dir = work / "model"
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(bundle / "model"), dtype=torch.float32)
    model.save_pretrained(model_dir)
    for name in MODEL_FILES[1:]:
        if (bundle / "model" / name).is_file():
            shutil.copy2(bundle / "model" / name, model_dir / name)
    port = 18731
    web_root = work / "web"
    started = time.perf_counter()
    build = build_web([SiteConfig("foldoc", "foldoc", str(bundle / "foldoc"), max_pages=3000)], web_root, f"http://127.0.0.1:{port}")
    web_s = time.perf_counter() - started
    items = [QAItem(json.loads(line)["question"], json.loads(line)["answer"]) for line in (bundle / "qa.jsonl").read_text().splitlines()]
    overrides = [f"run.root={work}", "run.name=r", f"web.root={web_root}", f"web.port={port}", "tools.visit.cache_dir=null",
                 "agent.current_date=2026-11-28", "rl.engine=trl", f"rl.model_path={model_dir}", "rl.val_fraction=0",
                 f"rl.total_training_steps={steps}", "rl.n_rollouts=4", "rl.train_batch_size=4", "rl.ppo_mini_batch_size=4",
                 "rl.max_turns=3", "rl.max_turn_tokens=128", "rl.max_prompt_length=4096", "rl.max_response_length=512",
                 "rl.overlong_buffer=256", "rl.filter_groups=false", "rl.learning_rate=1e-4", "rl.temperature=1.0",
                 "rewards={vowels: {weight: 1.0}, format: {weight: 0.1}}"]
    cfg = load_config(None, overrides)
    rl_prepare(items, cfg, work / "data")
    lines: list[str] = []
    started = time.perf_counter()
    with LocalWebServer(web_root, "127.0.0.1", port):
        final = train(cfg, work / "data", work / "rl", str(model_dir), echo=lambda s: (lines.append(s), print(s, flush=True)))
    train_s = time.perf_counter() - started
    before, after = load_file(model_dir / "model.safetensors"), load_file(final / "model.safetensors")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    metrics = [json.loads(line) for line in (work / "rl/metrics.jsonl").read_text().splitlines()]
    cuda = torch.cuda.is_available()
    summary = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__,
        "web_pages": build.pages, "web_build_s": round(web_s, 1),
        "steps": len(metrics), "train_s": round(train_s, 1),
        "tensors_changed": f"{len(changed)}/{len(before)}",
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "per_step": [{k: m.get(k) for k in ("step", "loss", "reward/mean", "reward/vowels/mean", "response_length/mean", "turns/mean",
                                             "seconds_per_step", "time/generate_s", "time/update_s", "generate_tokens_per_s")} for m in metrics],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    shutil.copy2(work / "rl/metrics.jsonl", out / "metrics.jsonl")
    print(json.dumps(summary, indent=1))
    assert len(metrics) == steps, f"{len(metrics)} metric lines for {steps} steps"
    assert changed, "no weight changed: the policy was not updated"
    assert all(m["loss"] == m["loss"] for m in metrics), "a NaN loss"
    if cuda:
        assert torch.cuda.max_memory_allocated() > 0, "nothing was allocated on the GPU"
    return summary


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "prepare":
        prepare(Path(argv[1]))
        return 0
    if len(argv) >= 3 and argv[0] == "run":
        run(Path(argv[1]).resolve(), Path(argv[2]).resolve(), int(argv[3]) if len(argv) > 3 else 2)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
