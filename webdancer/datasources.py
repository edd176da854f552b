"""Hugging Face datasets as inputs: a dataset folder or a Hub dataset, read like a file of records.

`hf:OWNER/NAME` names a Hub dataset (read from the local Hugging Face cache when offline); a folder
is a dataset folder (`webdancer data export` output, parquet/JSON files, or `save_to_disk`). Either
may end in `#CONFIG` to pick a config. `split` picks a split; when the dataset has one split it
may be left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from webdancer.errors import WebdancerError

if TYPE_CHECKING:
    from webdancer.records import QAItem


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


def is_dataset_ref(source: str | Path) -> bool:
    return str(source).startswith("hf:") or Path(str(source).split("#")[0]).is_dir()


def open_dataset(source: str, split: Optional[str] = None) -> DatasetRows:
    """The rows of dataset `source` (`hf:OWNER/NAME[#CONFIG]` or a folder[#CONFIG]), split `split`."""
    import datasets

    ref, _, config = str(source).partition("#")
    hub = ref.startswith("hf:")
    target = ref[3:] if hub else ref
    datasets.disable_progress_bars()
    try:
        if not hub and (Path(target) / "state.json").is_file():
            loaded: Any = datasets.load_from_disk(target)
        else:
            loaded = datasets.load_dataset(target, config or None)
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
    name = f"{source}[{split}]" if split else str(source)
    return DatasetRows(name, [dict(row) for row in loaded], stem=Path(target).name or "dataset", parent=Path(target) if not hub else Path("."))


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
