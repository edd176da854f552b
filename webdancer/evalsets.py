"""Benchmark files a user has locally, read as QAItems: GAIA, WebWalkerQA, BrowseComp, xbench-DeepSearch,
BrowseComp-zh and our QA JSONL.

Nothing is downloaded: each loader reads the files as the benchmark's release and its `datasets` copy
spell them (field names are matched case-insensitively: WebWalkerQA's README writes `Question`, its
Hugging Face copy `question`), and a record in the wrong shape is an error naming the file, the line
and the fields expected. The fields a report groups by (level, type, difficulty, topic, tag) go to
`provenance["groups"]`.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Iterator

from webdancer.datasources import DatasetRows, is_dataset_ref, open_dataset
from webdancer.errors import WebdancerError
from webdancer.records import QAItem

FORMATS = ("gaia", "webwalkerqa", "browsecomp", "xbench", "browsecomp-zh", "qa")


class EvalSetError(WebdancerError):
    exit_code = 2


def _records(path: Path | DatasetRows) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, record) from JSONL, or from one JSON array (WebWalkerQA ships both ways), or a dataset's rows."""
    if isinstance(path, DatasetRows):
        yield from enumerate(path.rows, 1)
        return
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EvalSetError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); fix or re-export the file") from None
        for i, rec in enumerate(data, 1):
            yield i, rec
        return
    # JSONL lines end at \n only: str.splitlines() also splits at U+2028 and other characters a JSON string may hold raw.
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalSetError(f"{path}:{lineno}: not valid JSON ({exc.msg}); each line must be one JSON object") from None


def _folded(rec: Any) -> Any:
    """The record with lower-case keys, nested objects too (the releases differ only in case)."""
    if isinstance(rec, dict):
        return {str(k).strip().lower(): _folded(v) for k, v in rec.items()}
    return rec


def _need(path: Path, where: int, rec: Any, fields: tuple[str, ...], fmt: str) -> dict[str, Any]:
    """`rec` with folded keys, once it has every field (named as the release spells them) with a value."""
    if not isinstance(rec, dict):
        raise EvalSetError(f"{path}:{where}: expected a JSON object, got {type(rec).__name__}")
    folded = _folded(rec)
    missing = [f for f in fields if folded.get(f.lower()) is None]
    if missing:
        raise EvalSetError(
            f"{path}:{where}: {fmt} record lacks field {', '.join(repr(m) for m in missing)} "
            f"(has {', '.join(sorted(map(str, rec))) or 'nothing'}; field names are matched in any case); is this the right --format?"
        )
    return folded


def load_gaia(path: Path) -> list[QAItem]:
    """GAIA's `metadata.jsonl`: task_id, Question, Level, Final answer, file_name.

    The test split withholds its answers ("?"): its questions are asked and answered, not scored
    (provenance `answer_withheld`); `webdancer eval` writes their answers as the leaderboard's submission file.
    """
    items = []
    for where, rec in _records(path):
        rec = _need(path, where, rec, ("task_id", "Question", "Final answer", "Level"), "GAIA")
        answer = str(rec["final answer"]).strip()
        withheld = answer == "?"  # the test split: its leaderboard scores the answers (submission.jsonl)
        attachment = rec.get("file_name") or ""
        # A dataset row carries its attachment's path (file_path); metadata.jsonl sits beside its attachments.
        file_path = rec.get("file_path") if isinstance(path, DatasetRows) else str(path.parent / attachment) if attachment else ""
        items.append(
            QAItem(
                question=str(rec["question"]),
                answer="" if withheld else answer,
                id=str(rec["task_id"]),
                tag="gaia",
                provenance={"groups": {"level": str(rec["level"])}, "file_name": attachment, **({"file_path": file_path} if file_path else {}),
                            **({"answer_withheld": True} if withheld else {})},
            )
        )
    return items


def load_webwalkerqa(path: Path) -> list[QAItem]:
    """WebWalkerQA: Question, Answer, Root_Url, Info{Type or Hop, Difficulty_Level, Domain, Source_Website, ...}
    (its README's spelling), or question, answer, root_url, info{...} (its Hugging Face copy's)."""
    items = []
    for where, rec in _records(path):
        rec = _need(path, where, rec, ("Question", "Answer", "Root_Url"), "WebWalkerQA")
        info = rec.get("info") or {}
        if not isinstance(info, dict):
            raise EvalSetError(f"{path}:{where}: WebWalkerQA field 'Info' must be an object, got {type(info).__name__}")
        groups = {
            "type": str(info.get("type") or info.get("hop") or "unknown").lower().replace("-", "_"),
            "difficulty": str(info.get("difficulty_level") or "unknown").lower(),
        }
        if info.get("domain"):
            groups["domain"] = str(info["domain"]).lower()
        language = info.get("lang") or info.get("language")
        if language:
            groups["language"] = str(language).lower()
        items.append(
            QAItem(
                question=str(rec["question"]),
                answer=str(rec["answer"]),
                tag="webwalkerqa",
                source_urls=[str(u) for u in info.get("source_website") or []],
                provenance={"groups": groups, "root_url": str(rec["root_url"])},
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


def _csv_rows(path: Path | DatasetRows, needed: tuple[str, ...], fmt: str, expected: str) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, row with lower-case column names) of a CSV with at least the `needed` columns."""
    if isinstance(path, DatasetRows):
        rows: Iterator[tuple[int, dict]] = enumerate(path.rows, 1)
        columns = {str(c).strip().lower() for c in (path.rows[0] if path.rows else {})}
    else:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = {c.strip().lower() for c in reader.fieldnames or []}
            rows = iter(list(enumerate(reader, 2)))
    missing = [c for c in needed if c not in columns]
    if missing:
        raise EvalSetError(
            f"{path}: {fmt} lacks column {', '.join(repr(m) for m in missing)} "
            f"(has {', '.join(sorted(columns)) or 'no header'}); expected {expected}"
        )
    for row_no, row in rows:
        yield row_no, {str(k).strip().lower(): "" if v is None else str(v) for k, v in row.items() if k is not None}


def _decrypted(path: Path, where: Any, fmt: str, decode: Callable[[str], str], *values: str) -> list[str]:
    try:
        return [decode(v) for v in values]
    except (ValueError, UnicodeDecodeError, TypeError):
        raise EvalSetError(
            f"{path}:{where}: the encrypted fields do not decrypt with this row's canary; "
            f"the file must be {fmt}'s release as published (base64 XOR ciphertext, one canary per row)"
        ) from None


def load_browsecomp(path: Path) -> list[QAItem]:
    """BrowseComp's CSV: problem and answer encrypted with the row's canary; problem_topic for groups."""
    items = []
    for row_no, row in _csv_rows(path, ("problem", "answer", "canary"), "BrowseComp", "problem, answer, problem_topic, canary"):
        question, answer = _decrypted(path, row_no, "BrowseComp", lambda v: decrypt(v, row["canary"]), row["problem"], row["answer"])
        items.append(QAItem(question=question, answer=answer, tag="browsecomp",
                            provenance={"groups": {"topic": (row.get("problem_topic") or "unknown").lower()}}))
    return items


def xor_with_canary(ciphertext_b64: str, canary: str) -> str:
    """xbench's scheme: base64, then XOR with the canary's UTF-8 bytes repeated (no hash, unlike BrowseComp)."""
    data, key = base64.b64decode(ciphertext_b64), canary.encode()
    return bytes(b ^ key[i % len(key)] for i, b in enumerate(data)).decode()


def load_xbench(path: Path) -> list[QAItem]:
    """xbench-DeepSearch's CSV (DeepSearch.csv, DeepSearch-2510.csv): id, prompt, answer, canary, encrypted per row."""
    items = []
    for row_no, row in _csv_rows(path, ("id", "prompt", "answer", "canary"), "xbench", "id, prompt, answer, reference_steps, canary"):
        question, answer = _decrypted(path, row_no, "xbench-DeepSearch", lambda v: xor_with_canary(v, row["canary"]), row["prompt"], row["answer"])
        groups = {"type": row["type"].lower()} if row.get("type") else {"set": path.stem.lower()}
        items.append(QAItem(question=question, answer=answer, id=f"xbench-{path.stem}-{row['id']}", tag="xbench", provenance={"groups": groups}))
    return items


def load_browsecomp_zh(path: Path) -> list[QAItem]:
    """BrowseComp-zh's `browsecomp-zh-encrypted.xlsx`: Topic, Question, Answer encrypted as BrowseComp's, with the row's canary."""
    if isinstance(path, DatasetRows):
        rows = iter([list(path.rows[0]) if path.rows else []] + [list(r.values()) for r in path.rows])
        return _browsecomp_zh_items(path, rows)
    try:
        import openpyxl
    except ImportError:
        raise EvalSetError(f"{path}: reading BrowseComp-zh's .xlsx needs openpyxl: pip install 'webdancer[eval]'") from None
    try:
        sheet = openpyxl.load_workbook(path, read_only=True, data_only=True).worksheets[0]
    except Exception as exc:  # openpyxl raises zipfile, KeyError and its own errors for a file that is not a workbook
        raise EvalSetError(f"{path}: not a readable .xlsx workbook ({type(exc).__name__}: {exc})") from None
    return _browsecomp_zh_items(path, sheet.iter_rows(values_only=True))


def _browsecomp_zh_items(path: Any, rows: Iterator) -> list[QAItem]:
    header = [str(c or "").strip().lower() for c in next(rows, ())]
    missing = [c for c in ("question", "answer", "canary") if c not in header]
    if missing:
        raise EvalSetError(f"{path}: BrowseComp-zh sheet lacks column {', '.join(repr(m) for m in missing)} "
                           f"(has {', '.join(h for h in header if h) or 'no header'}); expected Topic, Question, Answer, canary")
    items = []
    for row_no, values in enumerate(rows, 2):
        row = {h: str(v) if v is not None else "" for h, v in zip(header, values)}
        if not row.get("canary"):
            continue  # an empty trailing row
        fields = [row["question"], row["answer"]] + ([row["topic"]] if row.get("topic") else [])
        plain = _decrypted(path, row_no, "BrowseComp-zh", lambda v: decrypt(v, row["canary"]), *fields)
        items.append(QAItem(question=plain[0], answer=plain[1], tag="browsecomp-zh",
                            provenance={"groups": {"topic": plain[2] if len(plain) > 2 else "unknown"}}))
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
    "xbench": load_xbench,
    "browsecomp-zh": load_browsecomp_zh,
    "qa": load_qa,
}


def detect_format(path: Path | DatasetRows) -> str:
    """Guess the format from the extension and the first record's (or header's) field names, in any case."""
    suffix = path.suffix.lower()
    if isinstance(path, DatasetRows) and path.rows:
        columns = {str(c).strip().lower() for c in path.rows[0]}
        if "canary" in columns:
            return "browsecomp" if "problem" in columns else "xbench" if "prompt" in columns else "browsecomp-zh"
    if suffix == ".xlsx":
        return "browsecomp-zh"
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as fh:
            columns = {c.strip().lower() for c in next(csv.reader(fh), [])}
        if "problem" in columns:
            return "browsecomp"
        if "prompt" in columns:
            return "xbench"
        raise EvalSetError(f"{path}: cannot tell the format from the CSV header ({', '.join(sorted(columns))}); pass --format")
    for _, rec in _records(path):
        keys = set(_folded(rec)) if isinstance(rec, dict) else set()
        if {"question", "final answer"} <= keys:
            return "gaia"
        if {"question", "answer", "root_url"} <= keys:
            return "webwalkerqa"
        if {"question", "answer"} <= keys:
            return "qa" if "question" in rec else "webwalkerqa"
        raise EvalSetError(
            f"{path}: cannot tell the format from the first record's keys ({', '.join(sorted(map(str, keys)))}); "
            f"pass --format ({', '.join(FORMATS)})"
        )
    raise EvalSetError(f"{path}: no records")


def load_eval_set(source: str | Path, fmt: str = "auto", split: str | None = None) -> list[QAItem]:
    """The questions of a benchmark file, a dataset folder or a Hub dataset (`hf:OWNER/NAME`; see webdancer.datasources)."""
    path: Path | DatasetRows
    if is_dataset_ref(source):
        path = open_dataset(str(source), split)
    else:
        path = Path(source)
        if not path.is_file():
            raise EvalSetError(f"{path}: no such file, dataset folder or hf: dataset")
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
