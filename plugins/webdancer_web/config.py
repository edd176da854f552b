"""The offline web's config section (`web`): the sites it is built from, where it is served."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar


@dataclass
class SiteConfig:
    """One local site, served under /<name>/ by `webdancer web serve`."""

    name: str = ""  # the URL prefix /<name>/
    # html_dir: a folder of real HTML pages (Debian python3-doc); foldoc: the dictd files of dict-foldoc.
    kind: str = "html_dir"
    source: str = ""  # the folder the pages come from
    max_pages: int = 0  # 0 = all
    licence: str = ""  # the pages' licence (SPDX id), written into exported dataset cards


@dataclass
class WebConfig:
    """The offline web: built into `root`, served on host:port (stable URLs depend on the port)."""

    name: ClassVar[str] = "web"  # the config section it is read from

    root: str = ".webdancer/web"  # pages.jsonl, the BM25 index, the manifest
    host: str = "127.0.0.1"
    port: int = 8765
    sites: list[SiteConfig] = field(
        default_factory=lambda: [
            SiteConfig("python", "html_dir", "/usr/share/doc/python3-doc/html", licence="PSF-2.0"),
            SiteConfig("foldoc", "foldoc", "/usr/share/dictd", licence="GFDL-1.1-or-later"),
        ]
    )

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"
