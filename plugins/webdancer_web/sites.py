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


def html_dir_files(source: Path, max_pages: int = 0) -> list[str]:
    """The paths of a real HTML tree's .html files inside it, in sorted (stable) order."""
    if not source.is_dir():
        raise WebdancerError(f"site source {source} is not a folder; install the package that ships it (see scripts/setup.sh)")
    files = sorted(p for p in source.rglob("*.html") if "_sources" not in p.parts)
    if not files:
        raise WebdancerError(f"site source {source} has no .html files")
    return [p.relative_to(source).as_posix() for p in files[: max_pages or None]]


def read_html(source: Path | str, path: str) -> str:
    return Path(source, path).read_text(encoding="utf-8", errors="replace")


def html_dir_pages(source: Path, max_pages: int = 0) -> Iterator[SourcePage]:
    """Every .html file of a real HTML tree, in sorted (stable) order."""
    for path in html_dir_files(source, max_pages):
        yield SourcePage(path, read_html(source, path))


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
    slugs = _unique_slugs([words[0] for _, words in entries])
    known: dict[str, str] = {}
    for (_, words), slug in zip(entries, slugs):
        for word in words:
            known.setdefault(word.lower(), slug)  # a word two entries share links to the first
    items = []
    for ((offset, length), words), slug in zip(entries, slugs):
        body = data[offset : offset + length].decode("utf-8", errors="replace")
        first, _, rest = body.partition("\n")
        items.append((words, slug, first.strip() or words[0], rest))
    listed = sorted((words[0].lower(), title, slug) for words, slug, title, _ in items)
    index_html = "".join(f'<li><a href="{slug}">{html.escape(title)}</a></li>' for _, title, slug in listed)
    yield SourcePage(
        "index.html",
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>FOLDOC - Free On-line Dictionary of Computing</title></head>"
        f"<body><main><h1>Free On-line Dictionary of Computing</h1><ul>{index_html}</ul></main></body></html>\n",
    )
    taken = {"index.html", *slugs}
    aliased: set[str] = set()
    for words, slug, title, body in items:
        aliases = sorted({foldoc_slug(w) for w in words[1:]} - taken - aliased)  # never shadows a page or another alias
        aliased.update(aliases)
        yield SourcePage(slug, _render_foldoc(title, body, known), aliases)


def _unique_slugs(headwords: list[str]) -> list[str]:
    """One page name per entry: FOLDOC has entries that share a headword (193 of them: "actor" the language and
    "actor" the object; one is even "index"), so the later ones get "-2", "-3"; index.html stays the site's index."""
    taken = {"index.html"}
    slugs = []
    for word in headwords:
        slug = foldoc_slug(word)
        stem, n = slug[: -len(".html")], 2
        while slug in taken:
            slug, n = f"{stem}-{n}.html", n + 1
        taken.add(slug)
        slugs.append(slug)
    return slugs


def site_pages(site: SiteConfig) -> Iterator[SourcePage]:
    source = Path(site.source)
    if site.kind == "foldoc":
        return foldoc_pages(source, site.max_pages)
    if site.kind == "html_dir":
        return html_dir_pages(source, site.max_pages)
    raise WebdancerError(f"web.sites: site '{site.name}' has kind '{site.kind}'; use html_dir or foldoc")
