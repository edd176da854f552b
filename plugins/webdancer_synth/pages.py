"""Facts the structural generator reads off a page: its name, a masked description, dates, senses."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

_TITLE_SUFFIX = re.compile(r"\s+(?:-|—|–)\s+.*$")
_TAG = re.compile(r"^\s*(?:\d\.\s*)?<([a-z][\w ,/-]*)>\s*")
_UPDATED = re.compile(r"Last updated:\s*(\d{4})-(\d{2})-(\d{2})")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z(])")
_YEAR = re.compile(r"\b(1[89]\d\d|20[0-2]\d)\b")


@dataclass
class PageFacts:
    url: str
    name: str
    category: str
    description: str  # first sentence with the name masked
    first_sentence: str
    updated: Optional[str]
    senses: int


def page_name(title: str) -> str:
    """'Python - FOLDOC' -> 'Python'; 'os.path — Common pathname manipulations — Python 3.11' -> 'os.path'."""
    return _TITLE_SUFFIX.sub("", title).strip()


def mask(text: str, name: str) -> str:
    if not name:
        return text
    return re.sub(r"(?<!\w)" + re.escape(name) + r"(?!\w)", "this subject", text, flags=re.I)


def facts(url: str, title: str, text: str) -> Optional[PageFacts]:
    name = page_name(title)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if lines and lines[0].lower() == name.lower():
        lines = lines[1:]  # the heading repeats the title
    if not name or not lines:
        return None
    body = lines[0]
    tag = _TAG.match(body)
    category = tag.group(1) if tag else ""
    body = _TAG.sub("", body)
    body = re.sub(r"<[^<>@\s]+@[^<>\s]+>", "", body)  # e-mail addresses
    first = _SENTENCE.split(body, 1)[0].strip()
    described = mask(first, name).rstrip(".")
    # A usable description reads as a definition: long enough, not a note in brackets, not a synonym list.
    if len(first.split()) < 6 or first.startswith(("(", "[", "\"")) or described.count("this subject") > 1:
        return None
    updated = _UPDATED.search(text)
    senses = len(re.findall(r"(?m)^\s*\d\.\s*<", text)) or len(re.findall(r"(?m)^\s*\d\.\s", text))
    return PageFacts(url, name, category, described, first, updated.group(0).split()[-1] if updated else None, senses)


def year_in(text: str) -> Optional[str]:
    match = _YEAR.search(text)
    return match.group(1) if match else None
