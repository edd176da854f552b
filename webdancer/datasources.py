"""Hugging Face datasets as inputs: a dataset folder or a Hub dataset, read like a file of records.

`hf:OWNER/NAME` names a Hub dataset (read from the local Hugging Face cache when offline); a folder
is a dataset folder (`webdancer data export` output, parquet/JSON files, or `save_to_disk`). Either
may end in `#CONFIG` to pick a config. `split` picks a split; when the dataset has one split it
may be left out.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from webdancer.errors import WebdancerError

if TYPE_CHECKING:
    from webdancer.records import QAItem, Trajectory


class DataSourceError(WebdancerError):
    exit_code = 2


@dataclass
class DatasetRows:
    """A dataset's rows with the name error messages use, e.g. `hf:callanwu/WebWalkerQA[main]`."""

    name: str
    rows: list[dict[str, Any]]
    stem: str = "dataset"
    parent: Path = field(default_factory=lambda: Path("."))
    suffix: str = ""

    def __str__(self) -> str:
        return self.name


# Fields whose keys differ from row to row (tool call arguments, tool schemas, provenance): `webdancer data export`
# stores them as JSON text, since parquet would give every row the other rows' keys as nulls. Reading decodes them.
FREE_FORM = ("arguments", "tools", "provenance")


def decode_free_form(value: Any) -> Any:
    """`value` with every FREE_FORM field, at any depth, that holds a JSON object or list as text, decoded."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in FREE_FORM and isinstance(v, str) and v[:1] in ("{", "["):
                try:
                    v = json.loads(v)
                except ValueError:
                    pass  # text that only looks like JSON stays text
            out[k] = decode_free_form(v)
        return out
    if isinstance(value, list):
        return [decode_free_form(v) for v in value]
    return value


def is_dataset_ref(source: str | Path) -> bool:
    return str(source).startswith("hf:") or Path(str(source).split("#")[0]).is_dir()


def open_dataset(source: str, split: Optional[str] = None) -> DatasetRows:
    """The rows of dataset `source` (`hf:OWNER/NAME[#CONFIG]` or a folder[#CONFIG]), split `split`."""
    import datasets

    ref, _, config = str(source).partition("#")
    hub = ref.startswith("hf:")
    target = ref[3:] if hub else ref
    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory(prefix="webdancer-ds-") as private_cache:
        loaded = _load(datasets, source, target, hub, config, split, private_cache)
        name = f"{source}[{loaded[1]}]" if loaded[1] else str(source)
        rows = [decode_free_form(dict(row)) for row in loaded[0]]
    return DatasetRows(name, rows, stem=Path(target).name or "dataset", parent=Path(target) if not hub else Path("."))


def _load(datasets: Any, source: str, target: str, hub: bool, config: str, split: Optional[str], private_cache: str) -> tuple[Any, Optional[str]]:
    """(the split's rows as a datasets.Dataset, the split's name). A local folder is prepared in `private_cache`:
    in the shared Hugging Face cache an older folder at the same path was served again (seen: an export
    rewritten in place read back as the previous one's rows)."""
    try:
        if not hub and (Path(target) / "state.json").is_file():
            loaded: Any = datasets.load_from_disk(target)
        elif hub:
            loaded = datasets.load_dataset(target, config or None)
        else:
            loaded = datasets.load_dataset(target, config or None, cache_dir=private_cache)
    except Exception as exc:  # datasets raises many kinds: not cached offline, no such repo, several configs, bad files
        where = "in the local Hugging Face cache, and the Hub is not reachable from here" if hub else "a dataset folder"
        raise DataSourceError(f"{source}: cannot be opened as a dataset ({type(exc).__name__}: {str(exc).splitlines()[0][:240]}); "
                              f"is it {where}?") from None
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        if split is None and len(splits) == 1:
            split = splits[0]
        if split not in loaded:
            raise DataSourceError(f"{source}: {'choose a split with --split' if split is None else f'no split {split!r}'}; it has {', '.join(splits)}")
        loaded = loaded[split]
    return loaded, split


def read_qa(source: str | Path, split: Optional[str] = None) -> list["QAItem"]:
    """QA items from our QA JSONL, a dataset folder or a Hub dataset (`hf:OWNER/NAME`): the same fields either way."""
    from webdancer.jsonl import read_records
    from webdancer.records import QAItem, record_from_dict

    if not is_dataset_ref(source):
        if not Path(source).is_file():
            raise DataSourceError(f"{source}: no such file, dataset folder or hf: dataset")
        return list(read_records(source, QAItem))
    data = open_dataset(str(source), split)
    missing = [f for f in ("question", "answer") if data.rows and f not in data.rows[0]]
    if missing:
        raise DataSourceError(f"{data.name}: a QA dataset needs the fields question and answer; it lacks {', '.join(missing)} "
                              f"(has {', '.join(data.rows[0])})")
    return [record_from_dict(QAItem, {k: v for k, v in row.items() if v is not None}, where=f"{data.name}:{i}") for i, row in enumerate(data.rows, 1)]


def read_trajectories(source: str, split: Optional[str] = None) -> list["Trajectory"]:
    """Trajectories from a dataset folder or a Hub dataset (ours or the reference release's layout).

    `webdancer data export` keeps a record's fields as they were (FREE_FORM ones as JSON text, decoded here).
    Datasets made by other tools (or by webdancer before 2026-11-28) may store a list of objects as one struct
    with every key any of them has, so a `visit` call reads back with `query: None` beside its `url`: keys whose
    value is None are dropped (our records never hold an explicit null where a value is expected); and the JSON
    loader of `datasets` turns ISO times (`started_at`) into timestamps, written back as the ISO strings they were."""
    from webdancer.reference import load_trajectory

    data = open_dataset(source, split)
    missing = [f for f in ("question",) if data.rows and f not in data.rows[0]]
    if missing or (data.rows and not ({"steps", "messages"} & set(data.rows[0]))):
        raise DataSourceError(f"{data.name}: a trajectory dataset needs the fields question and steps (or messages); "
                              f"it has {', '.join(data.rows[0])}")
    return [load_trajectory(_as_record(row), f"{data.name}:{i}") for i, row in enumerate(data.rows, 1)]


def _as_record(value: Any) -> Any:
    import datetime as dt

    if isinstance(value, dict):
        return {k: _as_record(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_as_record(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="seconds")
    return value
