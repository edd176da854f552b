"""`webdancer web build`: local sites -> served folders, page store, search index, manifest."""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

from webdancer.errors import WebdancerError
from webdancer.jsonl import atomic_write_json
from webdancer_web.config import SiteConfig
from webdancer_web.extract import extract
from webdancer_web.index import build_index
from webdancer_web.pages import Page
from webdancer_web.sites import SourcePage, site_pages


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


def _extract_batch(args: tuple[str, Optional[str], list[tuple[str, str]]]) -> list[tuple[str, str, list[str]]]:
    """Extract a batch of pages (in a worker process); generated sites are also written out here."""
    base, write_to, items = args
    out = []
    for path, html in items:
        if write_to is not None:
            with open(os.path.join(write_to, path), "w", encoding="utf-8") as fh:
                fh.write(html)
        ex = extract(html, base + path)
        out.append((ex.title, ex.text, ex.links))
    return out


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def build_web(
    sites: list[SiteConfig],
    root: Path,
    base_url: str,
    workers: int = 0,
    progress: Optional[Callable[[str, int], None]] = None,
) -> BuildStats:
    """Build everything into `root` (replacing an earlier build atomically, file by file)."""
    if not sites:
        raise WebdancerError("web.sites is empty: configure at least one site to build")
    names = [s.name for s in sites]
    if len(set(names)) != len(names) or not all(names):
        raise WebdancerError(f"web.sites need unique, non-empty names, got {names}")
    start = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    workers = workers or min(2, os.cpu_count() or 1)
    pages: list[Page] = []
    served: dict[str, str] = {}
    per_site: dict[str, int] = {}
    for site in sites:
        source_pages: list[SourcePage] = list(site_pages(site))
        base = site_base(base_url, site.name)
        folder = root / "sites" / site.name
        tmp = folder.with_name(folder.name + ".tmp")
        write_to: Optional[str] = None
        if site.kind == "html_dir":  # a real HTML tree is served where its package put it
            served[site.name] = str(Path(site.source).resolve())
        else:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            write_to = str(tmp)
            redirects = {alias: sp.path for sp in source_pages for alias in sp.redirects_from}
            (tmp / "_redirects.json").write_text(json.dumps(redirects, indent=0, sort_keys=True), encoding="utf-8")
        items = [(sp.path, sp.html) for sp in source_pages]
        jobs = [(base, write_to, batch) for batch in _chunks(items, max(25, len(items) // (workers * 4)))]
        if workers > 1 and len(items) > 400:
            with ProcessPoolExecutor(workers) as pool:
                results = [r for batch in pool.map(_extract_batch, jobs) for r in batch]
        else:
            results = [r for job in jobs for r in _extract_batch(job)]
        if write_to is not None:
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)
            served[site.name] = str(folder.resolve())
        for (path, _), (title, text, links) in zip(items, results):
            pages.append(Page(url=base + path, site=site.name, path=path, title=title or path, text=text, links=links))
        per_site[site.name] = len(items)
        if progress:
            progress(site.name, len(items))
    store = root / "pages.jsonl"
    tmp_store = store.with_suffix(".jsonl.tmp")
    with tmp_store.open("w", encoding="utf-8") as fh:
        for page in pages:
            fh.write(json.dumps(page.__dict__, ensure_ascii=False) + "\n")
    os.replace(tmp_store, store)
    index_tmp = root / "index.tmp"
    shutil.rmtree(index_tmp, ignore_errors=True)
    build_index([f"{p.title}\n{p.text}" for p in pages], index_tmp)
    shutil.rmtree(root / "index", ignore_errors=True)
    index_tmp.rename(root / "index")
    atomic_write_json(
        root / "index_docs.json",
        {"urls": [p.url for p in pages], "titles": [p.title for p in pages], "texts": [p.text for p in pages]},
    )
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
