"""Benchmark files a user has locally (GAIA, WebWalkerQA, BrowseComp, our QA JSONL) read as QAItems.

Nothing is downloaded: each loader reads the file in the shape its benchmark publishes it, and
a record in the wrong shape is an error naming the file, the line and the missing field. The
fields a report groups by (level, type, difficulty, topic, tag) go to `provenance["groups"]`.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Iterator

from webdancer.errors import WebdancerError
from webdancer.records import QAItem

FORMATS = ("gaia", "webwalkerqa", "browsecomp", "qa")


class EvalSetError(WebdancerError):
    exit_code = 2


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, record) from JSONL, or from one JSON array (WebWalkerQA ships both ways)."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EvalSetError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); fix or re-export the file") from None
        for i, rec in enumerate(data, 1):
            yield i, rec
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalSetError(f"{path}:{lineno}: not valid JSON ({exc.msg}); each line must be one JSON object") from None


def _need(path: Path, where: int, rec: Any, fields: tuple[str, ...], fmt: str) -> None:
    if not isinstance(rec, dict):
        raise EvalSetError(f"{path}:{where}: expected a JSON object, got {type(rec).__name__}")
    missing = [f for f in fields if f not in rec or rec[f] is None]
    if missing:
        raise EvalSetError(
            f"{path}:{where}: {fmt} record lacks field {', '.join(repr(m) for m in missing)} "
            f"(has {', '.join(sorted(map(str, rec))) or 'nothing'}); is this the right --format?"
        )


def load_gaia(path: Path) -> list[QAItem]:
    """GAIA's validation `metadata.jsonl`: task_id, Question, Level, Final answer, file_name."""
    items = []
    for where, rec in _records(path):
        _need(path, where, rec, ("task_id", "Question", "Final answer", "Level"), "GAIA")
        items.append(
            QAItem(
                question=str(rec["Question"]),
                answer=str(rec["Final answer"]),
                id=str(rec["task_id"]),
                tag="gaia",
                provenance={"groups": {"level": str(rec["Level"])}, "file_name": rec.get("file_name") or ""},
            )
        )
    return items


def load_webwalkerqa(path: Path) -> list[QAItem]:
    """WebWalkerQA: Question, Answer, Root_Url, Info{Type or Hop, Difficulty_Level, Domain, ...}."""
    items = []
    for where, rec in _records(path):
        _need(path, where, rec, ("Question", "Answer", "Root_Url"), "WebWalkerQA")
        info = rec.get("Info") or {}
        if not isinstance(info, dict):
            raise EvalSetError(f"{path}:{where}: WebWalkerQA field 'Info' must be an object, got {type(info).__name__}")
        groups = {
            "type": str(info.get("Type") or info.get("Hop") or "unknown").lower(),
            "difficulty": str(info.get("Difficulty_Level") or "unknown").lower(),
        }
        if info.get("Domain"):
            groups["domain"] = str(info["Domain"]).lower()
        items.append(
            QAItem(
                question=str(rec["Question"]),
                answer=str(rec["Answer"]),
                tag="webwalkerqa",
                source_urls=[str(u) for u in info.get("Source_Website") or []],
                provenance={"groups": groups, "root_url": str(rec["Root_Url"])},
            )
        )
    return items


def derive_key(password: str, length: int) -> bytes:
    """BrowseComp's key: SHA-256 of the row's canary, repeated to the ciphertext's length."""
    digest = hashlib.sha256(password.encode()).digest()
    return digest * (length // len(digest)) + digest[: length % len(digest)]


def decrypt(ciphertext_b64: str, password: str) -> str:
    """Inverse of BrowseComp's encryption: base64, then XOR with the derived key."""
    data = base64.b64decode(ciphertext_b64)
    key = derive_key(password, len(data))
    return bytes(a ^ b for a, b in zip(data, key)).decode()


def encrypt(plaintext: str, password: str) -> str:
    """For writing test fixtures in BrowseComp's published form."""
    data = plaintext.encode()
    key = derive_key(password, len(data))
    return base64.b64encode(bytes(a ^ b for a, b in zip(data, key))).decode()


def load_browsecomp(path: Path) -> list[QAItem]:
    """BrowseComp's CSV: problem and answer encrypted with the row's canary; problem_topic for groups."""
    items = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = set(reader.fieldnames or [])
        missing = [c for c in ("problem", "answer", "canary") if c not in columns]
        if missing:
            raise EvalSetError(
                f"{path}: BrowseComp CSV lacks column {', '.join(repr(m) for m in missing)} "
                f"(has {', '.join(sorted(columns)) or 'no header'}); expected problem, answer, problem_topic, canary"
            )
        for row_no, row in enumerate(reader, 2):
            try:
                question, answer = decrypt(row["problem"], row["canary"]), decrypt(row["answer"], row["canary"])
            except (ValueError, UnicodeDecodeError, TypeError):
                raise EvalSetError(
                    f"{path}:{row_no}: problem/answer do not decrypt with this row's canary; "
                    "the file must be BrowseComp's CSV as published (base64 XOR ciphertext)"
                ) from None
            items.append(
                QAItem(
                    question=question,
                    answer=answer,
                    tag="browsecomp",
                    provenance={"groups": {"topic": (row.get("problem_topic") or "unknown").lower()}},
                )
            )
    return items


def load_qa(path: Path) -> list[QAItem]:
    """Our own QA JSONL (and the reference release's sample_qa.jsonl)."""
    from webdancer.typed import FieldError, from_dict

    items = []
    for where, rec in _records(path):
        _need(path, where, rec, ("question", "answer"), "QA")
        try:
            item = from_dict(QAItem, rec)
        except FieldError as exc:
            raise EvalSetError(f"{path}:{where}: {exc}") from None
        item.provenance.setdefault("groups", {"tag": item.tag or "untagged"})
        items.append(item)
    return items


LOADERS: dict[str, Callable[[Path], list[QAItem]]] = {
    "gaia": load_gaia,
    "webwalkerqa": load_webwalkerqa,
    "browsecomp": load_browsecomp,
    "qa": load_qa,
}


def detect_format(path: Path) -> str:
    """Guess the format from the extension and the first record's keys."""
    if path.suffix.lower() == ".csv":
        return "browsecomp"
    for _, rec in _records(path):
        keys = set(rec) if isinstance(rec, dict) else set()
        if {"Question", "Final answer"} <= keys:
            return "gaia"
        if {"Question", "Answer"} <= keys:
            return "webwalkerqa"
        if {"question", "answer"} <= keys:
            return "qa"
        raise EvalSetError(
            f"{path}: cannot tell the format from the first record's keys ({', '.join(sorted(map(str, keys)))}); "
            f"pass --format ({', '.join(FORMATS)})"
        )
    raise EvalSetError(f"{path}: no records")


def load_eval_set(path: str | Path, fmt: str = "auto") -> list[QAItem]:
    path = Path(path)
    if not path.is_file():
        raise EvalSetError(f"{path}: no such file")
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt not in LOADERS:
        raise EvalSetError(f"unknown eval format {fmt!r}; choose one of {', '.join(FORMATS)} or auto")
    items = LOADERS[fmt](path)
    if not items:
        raise EvalSetError(f"{path}: no questions in it")
    seen: dict[str, int] = {}
    for item in items:  # duplicate questions share a stable id; keep them apart
        n = seen.get(item.id, 0)
        seen[item.id] = n + 1
        if n:
            item.id = f"{item.id}~{n}"
    return items
