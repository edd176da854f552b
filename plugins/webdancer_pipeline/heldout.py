"""Held-out questions stay held out: an evaluation question must be none that SFT or RL trains on.

A paired before/after comparison means nothing if the model saw the answer in training, and a synthesizer can write
the same question twice under different ids (two pages, one fact), so a question counts as seen by its id or by its
text (case, spacing and end punctuation aside).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Iterator

from webdancer.errors import ConfigError
from webdancer.jsonl import iter_json_lines


def normalized(question: str) -> str:
    return re.sub(r"\s+", " ", question).strip().rstrip("?.!").strip().casefold()


def questions(path: Path) -> Iterator[tuple[str, str]]:
    """(question id, question) of each line of a QA or trajectory file (a trajectory's id is `<question id>:<n>`)."""
    for _, obj in iter_json_lines(path):
        yield str(obj.get("id", "")).split(":", 1)[0], str(obj.get("question", ""))


def check_held_out(held: Path, trained: Iterable[Path]) -> None:
    """Refuse when a question of `held` is in any of the `trained` files, naming the overlapping ids."""
    held_items = list(questions(held))
    for path in trained:
        if not path.is_file():
            continue
        ids, texts = set(), set()
        for qid, text in questions(path):
            ids.add(qid)
            texts.add(normalized(text))
        overlap = sorted({qid for qid, text in held_items if qid in ids or normalized(text) in texts})
        if overlap:
            shown = ", ".join(overlap[:10]) + (f" and {len(overlap) - 10} more" if len(overlap) > 10 else "")
            raise ConfigError(f"{len(overlap)} held-out question(s) of {held} are also in {path} (same id or same question): {shown}. "
                              "An evaluation of questions the model trained on measures nothing; remove them from one of the files "
                              "(the pipeline's split stage writes both: rerun it after deduplicating the QA files) and rerun")
