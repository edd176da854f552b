"""`webdancer web build`: local sites -> served sites (a generated site as a pack), page store, search index, manifest."""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

from webdancer.errors import WebdancerError
from webdancer.jsonl import atomic_file, atomic_write_bytes, atomic_write_json, json_bytes
from webdancer_web.config import SiteConfig
from webdancer_web.extract import extract
from webdancer_web.index import TokenPart, index_tokens, merge_parts, tokenize_part
from webdancer_web.pack import PackWriter
from webdancer_web.pages import Page
from webdancer_web.sites import html_dir_files, read_html, site_pages


@dataclass
class BuildStats:
    pages: int
    seconds: float
    per_site: dict[str, int]

    @property
    def pages_per_s(self) -> float:
        return self.pages / self.seconds if self.seconds else 0.0


def site_base(base_url: str, site: str) -> str:
    return f"{base_url.rstrip('/')}/{site}/"


_BATCH_BYTES = 1 << 20  # HTML per worker task: enough to amortize the hand-over, small enough to balance two cores


@dataclass
class _Batch:
    """Pages of one site for one worker to extract and tokenize for the index."""

    base: str
    read_from: Optional[str]  # a real HTML tree: the worker reads each page's file from here
    numbers: list[int]  # the pages' places in the page store (ascending)
    paths: list[str]
    htmls: Optional[list[str]] = None
    size: int = 0  # bytes of HTML, to hand out the biggest batches first


def _extract_batch(batch: _Batch) -> tuple[list[tuple[str, str, list[str]]], TokenPart]:
    """(title, text, links) of each page and the pages' tokens (in a worker process)."""
    out = []
    for k, path in enumerate(batch.paths):
        html = batch.htmls[k] if batch.htmls is not None else read_html(batch.read_from or "", path)
        ex = extract(html, batch.base + path)
        out.append((ex.title or path, ex.text, ex.links))
    return out, tokenize_part([f"{title}\n{text}" for title, text, _ in out])


def _batches(pages: Iterable[tuple[str, Optional[str], int]], first: int, make: Callable[..., _Batch]) -> Iterator[_Batch]:
    """Consecutive (path, html, size) pages grouped into batches of about _BATCH_BYTES, numbered from `first`."""
    numbers, paths, htmls, size = [], [], [], 0
    for n, (path, html, nbytes) in enumerate(pages, first):
        numbers.append(n)
        paths.append(path)
        htmls.append(html)
        size += nbytes
        if size >= _BATCH_BYTES:
            yield make(numbers, paths, htmls, size)
            numbers, paths, htmls, size = [], [], [], 0
    if numbers:
        yield make(numbers, paths, htmls, size)


class _Runner:
    """Runs batches in a pool of worker processes once a site is big enough to pay for one, else in this process."""

    def __init__(self, workers: int):
        self.workers = workers
        self.pool: Optional[ProcessPoolExecutor] = None

    def submit(self, batch: _Batch, site_pages: int) -> Future:
        if self.pool is None and self.workers > 1 and site_pages > 400:
            self.pool = ProcessPoolExecutor(self.workers)
        if self.pool is not None:
            return self.pool.submit(_extract_batch, batch)
        done: Future = Future()
        done.set_result(_extract_batch(batch))
        return done

    def close(self, cancel: bool = False) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=cancel)


def _store(root: Path, pages: list[Page], packs: list[PackWriter]) -> None:
    """The generated sites' packs, the page store, and the documents the index's hits point to."""
    for pack in packs:
        pack.commit()
        shutil.rmtree(pack.table.with_suffix(""), ignore_errors=True)  # builds before packs wrote a folder of pages
    with atomic_file(root / "pages.jsonl") as fh:
        for page in pages:
            fh.write(json_bytes(page, newline=True))
    atomic_write_bytes(
        root / "index_docs.json",
        json_bytes({"urls": [p.url for p in pages], "titles": [p.title for p in pages], "texts": [p.text for p in pages]}),
    )


def build_web(
    sites: list[SiteConfig],
    root: Path,
    base_url: str,
    workers: int = 0,
    progress: Optional[Callable[[str, int], None]] = None,
) -> BuildStats:
    """Build everything into `root` (replacing an earlier build atomically, file by file).

    Every site's pages go to one pool of worker processes as they are listed or generated (a real HTML tree's
    biggest batches first), so generating FOLDOC, extracting the Python docs and tokenizing both overlap; the
    index's words are numbered as one pass over the pages in order would number them."""
    if not sites:
        raise WebdancerError("web.sites is empty: configure at least one site to build")
    names = [s.name for s in sites]
    if len(set(names)) != len(names) or not all(names):
        raise WebdancerError(f"web.sites need unique, non-empty names, got {names}")
    start = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    runner = _Runner(workers or min(2, os.cpu_count() or 1))
    paths: list[tuple[str, str]] = []  # (site, path) of every page, in page-store order
    jobs: list[tuple[_Batch, Future]] = []
    served: dict[str, str] = {}
    per_site: dict[str, int] = {}
    packs: list[PackWriter] = []  # generated sites' packs, written as their pages are generated
    try:
        for site in sites:
            base = site_base(base_url, site.name)
            if site.kind == "html_dir":  # a real HTML tree is served where its package put it
                source = Path(site.source).resolve()
                files = html_dir_files(source, site.max_pages)
                served[site.name] = str(source)
                listed = [(path, None, (source / path).stat().st_size) for path in files]
                batches = list(_batches(listed, len(paths), lambda n, p, _h, b: _Batch(base, str(source), n, p, size=b)))
                for batch in sorted(batches, key=lambda b: -b.size):
                    jobs.append((batch, runner.submit(batch, len(files))))
            else:  # a generated site is written as a pack, which the server reads
                (root / "sites").mkdir(exist_ok=True)
                pack = PackWriter(root / "sites" / f"{site.name}.json")
                packs.append(pack)
                served[site.name] = str(pack.table.resolve())
                files = []

                def listed_pages() -> Iterator[tuple[str, Optional[str], int]]:
                    for sp in site_pages(site):
                        pack.add(sp.path, sp.html, sp.redirects_from)
                        files.append(sp.path)
                        yield sp.path, sp.html, len(sp.html)

                for batch in _batches(listed_pages(), len(paths), lambda n, p, h, b: _Batch(base, None, n, p, h, b)):
                    jobs.append((batch, runner.submit(batch, site.max_pages or 401)))  # a generated site's size shows late
            paths += [(site.name, path) for path in files]
            per_site[site.name] = len(files)
        results: list[Optional[tuple[str, str, list[str]]]] = [None] * len(paths)
        parts: list[tuple[list[int], TokenPart]] = []
        for batch, future in jobs:
            extracted, part = future.result()
            for number, page in zip(batch.numbers, extracted):
                results[number] = page
            parts.append((batch.numbers, part))
        runner.close()
        for site in sites:
            if progress:
                progress(site.name, per_site[site.name])
        pages = [Page(site_base(base_url, site) + path, site, path, *page) for (site, path), page in zip(paths, results)]  # type: ignore[misc]
        with ThreadPoolExecutor(1) as writer:  # the files' writes and fsyncs wait on the disk while the index is built
            stored = writer.submit(_store, root, pages, packs)
            index_tmp = root / "index.tmp"
            shutil.rmtree(index_tmp, ignore_errors=True)
            index_tokens(merge_parts(parts, len(pages)), index_tmp)
            shutil.rmtree(root / "index", ignore_errors=True)
            index_tmp.rename(root / "index")
            stored.result()
    except BaseException:
        runner.close(cancel=True)
        for pack in packs:  # a committed pack has nothing left to remove
            pack.abort()
        raise
    seconds = time.perf_counter() - start
    atomic_write_json(
        root / "manifest.json",
        {
            "base_url": base_url,
            "sites": [{**asdict(s), "served_from": served[s.name], "pages": per_site[s.name]} for s in sites],
            "pages": len(pages),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": round(seconds, 2),
        },
    )
    return BuildStats(len(pages), seconds, per_site)


def load_manifest(root: Path) -> dict:
    path = root / "manifest.json"
    if not path.is_file():
        raise WebdancerError(f"no local web built in {root}: run `webdancer web build` first")
    return json.loads(path.read_text(encoding="utf-8"))
