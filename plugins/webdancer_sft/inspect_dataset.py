"""Run inside the SFT environment: build the dataset with LLaMA-Factory's own loader and report what it made.

Usage: .venvs/sft/bin/python inspect_dataset.py MODEL_PATH DATASET_DIR TEMPLATE CUTOFF_LEN
Prints one JSON object: examples in the file, examples LLaMA-Factory kept, and for each kept example
the full decoded text and the decoded text of the tokens it trains on (labels != -100).
This file imports only LLaMA-Factory (it runs in its environment, not webdancer's).
"""

import json
import sys
import tempfile
from pathlib import Path


def inspect(args: dict) -> dict:
    """LLaMA-Factory's parser on `args` (its YAML's keys), then its tokenizer, template and dataset loader."""
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    model_args, data_args, training_args, _, _ = get_train_args(args)
    tokenizer = load_tokenizer(model_args)["tokenizer"]
    tmpl = get_template_and_fix_tokenizer(tokenizer, data_args)
    dataset = get_dataset(tmpl, model_args, data_args, training_args, "sft", tokenizer)["train_dataset"]
    info = json.loads((Path(args["dataset_dir"]) / "dataset_info.json").read_text())
    in_file = sum(len(json.loads((Path(args["dataset_dir"]) / info[name]["file_name"]).read_text()))
                  for name in str(args["dataset"]).split(","))
    examples = []
    for row in dataset:
        ids, labels = row["input_ids"], row["labels"]
        examples.append(
            {
                "text": tokenizer.decode(ids, skip_special_tokens=False),
                "trained": tokenizer.decode([t for t, l in zip(ids, labels) if l != -100], skip_special_tokens=False),
                "tokens": len(ids),
                "trained_tokens": sum(1 for l in labels if l != -100),
            }
        )
    return {"in_file": in_file, "kept": len(examples), "examples": examples, "training_args": training_args}


def main() -> None:
    model_path, dataset_dir, template, cutoff = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    with tempfile.TemporaryDirectory() as out:
        report = inspect({
            "model_name_or_path": model_path,
            "stage": "sft",
            "do_train": True,
            "finetuning_type": "full",
            "dataset": "webdancer_sft",
            "dataset_dir": dataset_dir,
            "template": template,
            "cutoff_len": cutoff,
            "output_dir": out,
            "overwrite_cache": True,
            "preprocessing_num_workers": 1,
            "use_cpu": True,
            "report_to": "none",
        })
    report.pop("training_args")
    print("WEBDANCER_INSPECT " + json.dumps(report))


if __name__ == "__main__":
    main()
