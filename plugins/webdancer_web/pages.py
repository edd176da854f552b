"""The page store: one record per page of the local web (url, title, text, outgoing links)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Page:
    url: str
    site: str
    path: str
    title: str
    text: str
    links: list[str] = field(default_factory=list)
