"""Sources of the offline web: real HTML trees shipped by packages, and FOLDOC rendered as a wiki."""

from __future__ import annotations

import gzip
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from webdancer.errors import WebdancerError
from webdancer_web.config import SiteConfig


@dataclass
class SourcePage:
    """A page as a site source yields it: its path inside the site and its HTML."""

    path: str
    html: str
    redirects_from: list[str] = field(default_factory=list)


def html_dir_pages(source: Path, max_pages: int = 0) -> Iterator[SourcePage]:
    """Every .html file of a real HTML tree, in sorted (stable) order."""
    if not source.is_dir():
        raise WebdancerError(f"site source {source} is not a folder; install the package that ships it (see scripts/setup.sh)")
    files = sorted(p for p in source.rglob("*.html") if "_sources" not in p.parts)
    if not files:
        raise WebdancerError(f"site source {source} has no .html files")
    for n, path in enumerate(files):
        if max_pages and n >= max_pages:
            return
        yield SourcePage(path.relative_to(source).as_posix(), path.read_text(encoding="utf-8", errors="replace"))


# --- FOLDOC (dictd format: an index of headword / base64 offset / base64 length, and a gzip body) ---

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_VALUE = {c: i for i, c in enumerate(_B64)}
_REF = re.compile(r"\{([^{}]+)\}")
_DATE = re.compile(r"^\((\d{4}-\d{2}-\d{2})\)$")


def _b64(text: str) -> int:
    value = 0
    for ch in text:
        value = value * 64 + _B64_VALUE[ch]
    return value


def foldoc_slug(headword: str) -> str:
    """A stable file name for a headword: safe characters kept, others spelled as _xx_ hex."""
    out = []
    for ch in headword:
        if ch.isascii() and (ch.isalnum() or ch in "-."):
            out.append(ch)
        elif ch == " ":
            out.append("_")
        else:
            out.append(f"_{ord(ch):x}_")
    return "".join(out) + ".html"


def _render_foldoc(headword: str, body: str, known: dict[str, str]) -> str:
    paragraphs: list[str] = []
    updated: Optional[str] = None
    for block in re.split(r"\n\s*\n", body.strip("\n")):
        text = " ".join(line.strip() for line in block.splitlines()).strip()
        if not text:
            continue
        date = _DATE.match(text)
        if date:
            updated = date.group(1)
            continue

        parts = _REF.split(text)
        rendered = []
        for i, part in enumerate(parts):
            if i % 2:
                slug = known.get(part.lower())
                rendered.append(f'<a href="{slug}">{html.escape(part)}</a>' if slug else html.escape(part))
            else:
                rendered.append(html.escape(part))
        paragraphs.append("<p>" + "".join(rendered) + "</p>")
    title = html.escape(headword)
    footer = f"<p class=\"updated\">Last updated: {updated}</p>" if updated else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{title} - FOLDOC</title></head><body>"
        '<nav><a href="index.html">FOLDOC</a></nav>'
        f"<main><article><h1>{title}</h1>{''.join(paragraphs)}{footer}</article></main>"
        "<footer>From the Free On-line Dictionary of Computing, editor Denis Howe (GFDL).</footer>"
        "</body></html>\n"
    )


def foldoc_pages(source: Path, max_pages: int = 0) -> Iterator[SourcePage]:
    """FOLDOC entries as linked HTML pages; headwords that share an entry become redirects to it."""
    index_file, dict_file = source / "foldoc.index", source / "foldoc.dict.dz"
    if not index_file.is_file() or not dict_file.is_file():
        raise WebdancerError(f"FOLDOC not found in {source} (expected foldoc.index and foldoc.dict.dz): apt-get install dict-foldoc")
    data = gzip.decompress(dict_file.read_bytes())
    by_span: dict[tuple[int, int], list[str]] = {}
    for line in index_file.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        if len(parts) != 3 or parts[0].startswith("00-database") or parts[0].startswith("00database"):
            continue
        by_span.setdefault((_b64(parts[1]), _b64(parts[2])), []).append(parts[0])
    entries = sorted(by_span.items())
    if max_pages:
        entries = entries[:max_pages]
    known: dict[str, str] = {}
    for _, words in entries:
        canonical = foldoc_slug(words[0])
        for word in words:
            known.setdefault(word.lower(), canonical)
    items = []
    for (offset, length), words in entries:
        body = data[offset : offset + length].decode("utf-8", errors="replace")
        first, _, rest = body.partition("\n")
        items.append((words, first.strip() or words[0], rest))
    links = sorted(known.items())
    index_html = "".join(f'<li><a href="{slug}">{html.escape(word)}</a></li>' for word, slug in links if slug == foldoc_slug(word))
    yield SourcePage(
        "index.html",
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>FOLDOC - Free On-line Dictionary of Computing</title></head>"
        f"<body><main><h1>Free On-line Dictionary of Computing</h1><ul>{index_html}</ul></main></body></html>\n",
    )
    for words, title, body in items:
        canonical = foldoc_slug(words[0])
        aliases = sorted({foldoc_slug(w) for w in words[1:]} - {canonical})
        yield SourcePage(canonical, _render_foldoc(title, body, known), aliases)


def site_pages(site: SiteConfig) -> Iterator[SourcePage]:
    source = Path(site.source)
    if site.kind == "foldoc":
        return foldoc_pages(source, site.max_pages)
    if site.kind == "html_dir":
        return html_dir_pages(source, site.max_pages)
    raise WebdancerError(f"web.sites: site '{site.name}' has kind '{site.kind}'; use html_dir or foldoc")
