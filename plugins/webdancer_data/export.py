"""A run folder (or one artifact) as a Hugging Face dataset folder: parquet per config and split, and a card.

The folder is what `datasets.load_dataset(OUT, CONFIG)` reads and what `push_to_hub` publishes
unchanged: `OUT/<config>/<split>-00000-of-00001.parquet` and `OUT/README.md`, whose YAML header
lists the configs and whose text says where the data came from (generator, config hash, counts,
why the filter dropped what it dropped, the licences of the pages it was made from).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webdancer import __version__
from webdancer.config import WebdancerConfig
from webdancer.config_loader import config_to_yaml
from webdancer.datasources import FREE_FORM
from webdancer.errors import RecordError, WebdancerError
from webdancer.jsonl import iter_json_lines


class ExportError(WebdancerError):
    exit_code = 2


@dataclass
class Part:
    """One config/split of the export and the file it comes from."""

    config: str
    split: str
    source: Path


@dataclass
class Export:
    out: Path
    parts: list[Part]
    rows: dict[str, dict[str, int]] = field(default_factory=dict)  # config -> split -> rows


def run_parts(run_dir: Path) -> list[Part]:
    """The artifacts a pipeline run holds, by what they are."""
    parts: list[Part] = []

    def add(config: str, split: str, path: Path) -> None:
        if path.is_file() and path.stat().st_size > 0:
            parts.append(Part(config, split, path))

    add("qa", "train", run_dir / "qa_train.jsonl")
    add("qa", "test", run_dir / "qa_eval.jsonl")
    for path in sorted(run_dir.glob("qa_*.jsonl")):
        if path.stem not in ("qa_train", "qa_eval"):
            add(f"synth_{path.stem[3:]}", "train", path)
    for path in sorted(run_dir.glob("trajectories_*.jsonl")):
        if not path.name.endswith(".outages.jsonl"):
            add(path.stem, "train", path)
    add("kept", "train", run_dir / "kept.jsonl")
    add("sft", "train", run_dir / "sft_data" / "webdancer_sft.json")
    add("rl", "train", run_dir / "rl_data" / "train.parquet")
    add("rl", "validation", run_dir / "rl_data" / "val.parquet")
    add("rl_tokens", "train", run_dir / "rl" / "token_rollouts.jsonl")  # every RL rollout as trained, token for token
    for folder in sorted(p for p in (run_dir / "eval").glob("*") if p.is_dir()):
        add(f"eval_{folder.name}", "test", folder / "trajectories.jsonl")
        add(f"eval_{folder.name}_scores", "test", folder / "scores.jsonl")
    return parts


def file_parts(path: Path) -> list[Part]:
    name = path.stem.replace(".", "_") or "default"
    return [Part(name, "train", path)]


def export_dataset(source: str | Path, out: str | Path, cfg: WebdancerConfig) -> Export:
    """Write the dataset folder `out` (new, or refused: an export never overwrites one) from a run folder or a file."""
    import datasets

    source, out = Path(source), Path(out)
    if not source.exists():
        raise ExportError(f"{source}: no such run folder or file")
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out} already holds files; export into a new folder (nothing was overwritten)")
    parts = run_parts(source) if source.is_dir() else file_parts(source)
    if not parts:
        raise ExportError(f"{source}: no artifacts to export (qa_*.jsonl, trajectories_*.jsonl, kept.jsonl, sft_data/, rl_data/, eval/)")
    datasets.disable_progress_bars()
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    export = Export(out, parts)
    for part in parts:
        rows = None if part.source.suffix == ".parquet" else [encode_free_form(row) for row in read_rows(part.source)]
        if (rows == [] if rows is not None else parquet_rows(part.source) == 0):
            # An empty split (rl.val_fraction=0) is listed with 0 rows and not written: `datasets` cannot read a
            # 0-row parquet file back ("BatchSize must be greater than 0"), and a missing split loads as none.
            export.rows.setdefault(part.config, {})[part.split] = 0
            continue
        try:
            if rows is None:
                ds = datasets.load_dataset("parquet", data_files=str(part.source), split="train", cache_dir=str(tmp / ".cache"))
            else:
                ds = datasets.Dataset.from_list(rows)
        except Exception as exc:  # pyarrow and datasets raise many types for rows they cannot store
            raise ExportError(f"{part.source}: cannot be read as a dataset ({type(exc).__name__}: {str(exc)[:200]})") from None
        target = tmp / part.config / f"{part.split}-00000-of-00001.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        ds.to_parquet(str(target))
        export.rows.setdefault(part.config, {})[part.split] = len(ds)
    shutil.rmtree(tmp / ".cache", ignore_errors=True)
    (tmp / "README.md").write_text(dataset_card(export, source, cfg), encoding="utf-8")
    if out.exists():
        out.rmdir()  # empty (checked above)
    tmp.replace(out)
    return export


def encode_free_form(value: Any) -> Any:
    """`value` with every FREE_FORM object or list, at any depth, as its JSON text (what is already text stays): their
    keys differ from row to row, and parquet stores a list of objects as one struct with every key any of them has
    (a visit call would read back with `query: None`). OpenAI's wire format does the same with `function.arguments`."""
    if isinstance(value, dict):
        return {k: json.dumps(v, ensure_ascii=False) if k in FREE_FORM and isinstance(v, (dict, list)) else encode_free_form(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [encode_free_form(v) for v in value]
    return value


def parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(path).num_rows
    except Exception as exc:  # pyarrow raises several types for a file that is not parquet
        raise ExportError(f"{path}: not a readable parquet file ({type(exc).__name__}: {str(exc)[:200]})") from None


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL file (or of a JSON array: the SFT file), as written: strings stay strings (the JSON
    loader of `datasets` turned ISO times such as `started_at` into timestamps)."""
    if path.suffix == ".json":
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ExportError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ExportError(f"{path}: expected a JSON array of objects")
        return rows
    try:
        return [row for _, row in iter_json_lines(path)]
    except RecordError as exc:
        raise ExportError(f"{exc}; repair or remove that line and export again") from None


def drop_reasons(run_dir: Path) -> dict[str, Any]:
    """The filter's reports (kept_*_report.json): how many were dropped at which stage, and why."""
    reports = {}
    for path in sorted(run_dir.glob("kept_*_report.json")) if run_dir.is_dir() else []:
        data = json.loads(path.read_text(encoding="utf-8"))
        reports[path.stem[len("kept_"):-len("_report")]] = {"total": data.get("total"), "kept": data.get("kept"), "dropped": data.get("dropped")}
    return reports


def dataset_card(export: Export, source: Path, cfg: WebdancerConfig) -> str:
    licences = sorted({site.licence for site in cfg.web.sites if site.licence})
    licence = licences[0].lower() if len(licences) == 1 else "other"
    config_hash = hashlib.sha256(config_to_yaml(cfg).encode()).hexdigest()[:16]
    header = ["---", f"license: {licence}", "tags:", "- webdancer", "- web-agent", "- question-answering", "configs:"]
    for config, splits in export.rows.items():
        written = [split for split, n in splits.items() if n]
        if written:
            header += [f"- config_name: {config}", "  data_files:"]
            header += [line for split in written for line in (f"  - split: {split}", f"    path: {config}/{split}-*.parquet")]
    header.append("---")
    body = [
        "", f"# {source.name}: webdancer data", "",
        "Made by [webdancer](https://github.com/webdancer) for training and evaluating web information-seeking agents.", "",
        "## Provenance", "",
        f"- generator: webdancer {__version__}",
        f"- exported: {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')} from `{source}`",
        f"- config hash (sha256 of the resolved config, first 16 hex digits): `{config_hash}`",
        "- source web: " + ", ".join(f"{s.name} ({s.kind}, {s.source}, licence {s.licence or 'unknown'})" for s in cfg.web.sites),
        "", "## Contents", "", "| config | split | rows |", "|---|---|---|",
    ]
    body += [f"| {config} | {split} | {n}{'' if n else ' (empty: no file)'} |" for config, splits in export.rows.items() for split, n in splits.items()]
    reasons = drop_reasons(source)
    if reasons:
        body += ["", "## What the filter dropped", ""]
        for policy, report in reasons.items():
            body.append(f"- {policy}: kept {report['kept']} of {report['total']}; dropped {json.dumps(report['dropped'], sort_keys=True)}")
    body += ["", "## Licence", "",
             "The questions, answers and page text derive from the pages of the source web above; they carry those pages' "
             f"licences ({', '.join(licences) or 'unknown'}). Load a config with "
             "`datasets.load_dataset(PATH_OR_REPO, CONFIG)`.", "",
             "## Format", "",
             f"Records are the JSONL records webdancer writes, field for field, except that the fields {', '.join(f'`{k}`' for k in FREE_FORM)} "
             "(tool call arguments, tool schemas, provenance) hold JSON text: their keys differ from row to row, and parquet "
             "would give every row every other row's keys as nulls. `json.loads` gives the objects back; webdancer's "
             "readers (`webdancer sample/eval --questions DATASET`, `webdancer sft export`, `webdancer rl prepare`) do.", ""]
    return "\n".join(header + body)


def push(out: Path, repo: str) -> str:
    """Upload the folder to the Hub as dataset `repo` (HF_TOKEN from the environment)."""
    import os

    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if not token:
        raise ExportError(f"--push {repo}: set HF_TOKEN (a Hugging Face write token) in the environment; the folder {out} is ready")
    try:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo, repo_type="dataset", exist_ok=True)
        info = api.upload_folder(folder_path=str(out), repo_id=repo, repo_type="dataset")
    except Exception as exc:  # offline mode, no network, a refused token: one readable line
        raise ExportError(f"--push {repo}: the upload failed ({type(exc).__name__}: {str(exc)[:200]}); the folder {out} is ready to push again") from None
    return str(getattr(info, "commit_url", repo))
