"""LLaMA-Factory's own checks of a `llamafactory-cli train YAML` run, on any machine with its environment (no GPU).

Run inside the SFT environment the way LLaMA-Factory's launcher runs training: under torchrun when the launch sets
FORCE_TORCHRUN (DeepSpeed), else in-process. It parses the YAML with LLaMA-Factory's `get_train_args` (transformers'
TrainingArguments included, so a DeepSpeed config is loaded and checked by DeepSpeed), then builds the tokenizer,
template and dataset with its loaders and reads the model's config. The contract suite runs it on every shipped
GPU recipe; `webdancer sft train --check` runs it on yours.

    python preflight.py YAML [--model FOLDER]

Where no GPU is visible, `use_cpu: true` is added (bf16 and the DeepSpeed engine's GPU half stay unchecked), and
`--model` stands in for a model folder that is not on this machine; both are recorded in the output. Prints
`WEBDANCER_PREFLIGHT {json}` (rank 0); a refusal prints LLaMA-Factory's own message and exits 1.
This file imports only LLaMA-Factory and what it brings (it runs in its environment, not webdancer's).
"""

import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inspect_dataset import inspect  # noqa: E402  (this folder: run as a script in LLaMA-Factory's environment)

MARK = "WEBDANCER_PREFLIGHT "


def main(argv: list) -> int:
    import torch
    import yaml

    args = yaml.safe_load(Path(argv[0]).read_text())
    substituted = {}
    if argv[1:2] == ["--model"]:
        substituted["model_name_or_path"] = {"was": args["model_name_or_path"], "now": argv[2]}
        args["model_name_or_path"] = argv[2]
    if not torch.cuda.is_available() and not args.get("use_cpu"):
        substituted["use_cpu"] = {"was": False, "now": True}
        args["use_cpu"] = True
    rank0 = int(os.environ.get("RANK", "0")) == 0
    with tempfile.TemporaryDirectory() as out:
        args["output_dir"] = out  # nothing is written where the real run writes
        try:
            report = inspect(args)
            from transformers import AutoConfig

            AutoConfig.from_pretrained(args["model_name_or_path"])
        except Exception as exc:  # LLaMA-Factory's, transformers' or DeepSpeed's own words are the message
            print(f"LLaMA-Factory refuses {argv[0]}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    if report["kept"] < report["in_file"]:
        print(f"LLaMA-Factory refuses {argv[0]}: its loader keeps {report['kept']} of {report['in_file']} examples (it skips "
              "malformed or too long ones with only a warning); re-export, or raise sft.cutoff_len", file=sys.stderr)
        return 1
    t = report["training_args"]
    if rank0:
        print(MARK + json.dumps({
            "substituted": substituted, "examples": report["kept"],
            "trained_tokens": sum(e["trained_tokens"] for e in report["examples"]),
            "deepspeed": t.deepspeed, "distributed": str(t.parallel_mode), "world_size": t.world_size, "bf16": t.bf16,
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
