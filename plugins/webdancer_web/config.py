"""The web plugin's config types: the offline web's section (`web`: the sites it is built from, where it is
served) and the search and visit tools' options (`tools.search`, `tools.visit`), in one module that the tools,
readers and corpus all import."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional


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


@dataclass
class SearchConfig:
    backend: str = "local"
    top_k: int = 10
    # local: the folder `webdancer web build` wrote.
    web_root: str = ".webdancer/web"
    # corpus: a JSONL or parquet file of {id, title, text, url} (webdancer_web.corpus), indexed on first use here.
    corpus: str = ""
    corpus_index_dir: str = ".webdancer/corpus-index"
    # serper: endpoint and the env vars holding the key (the reference release used GOOGLE_SEARCH_KEY).
    serper_url: str = "https://google.serper.dev/search"
    api_key_env: list[str] = field(default_factory=lambda: ["SERPER_API_KEY", "GOOGLE_SEARCH_KEY"])
    timeout_s: float = 20.0
    max_retries: int = 3
    backoff_s: float = 1.0
    max_queries: int = 5
    # URL patterns whose results are dropped (webdancer.leaks; `webdancer eval` adds eval.blocklist).
    blocklist: list[str] = field(default_factory=list)
    # local and corpus: 0 answers queries in this process; N > 0 in N worker processes, each holding the
    # index, so query throughput grows with cores (worth it for corpora of 100k+ documents under load).
    workers: int = 0


@dataclass
class VisitConfig:
    reader: str = "local"
    # corpus: the documents of this JSONL or parquet file of {id, title, text, url}, by url (webdancer_web.corpus).
    corpus: str = ""
    corpus_index_dir: str = ".webdancer/corpus-index"
    # host:port of the local sites that may be fetched even though they are on loopback.
    local_sites: list[str] = field(default_factory=lambda: ["127.0.0.1:8765"])
    timeout_s: float = 20.0
    max_retries: int = 2
    backoff_s: float = 0.5
    max_bytes: int = 5_000_000
    max_redirects: int = 5
    per_host_concurrency: int = 4
    max_urls: int = 5
    cache_dir: Optional[str] = ".webdancer/cache/visit"
    # The answer per URL is cut to about this many tokens (chars / 4).
    max_tokens: int = 1500
    # Summary model: an OpenAI-compatible endpoint (ModelConfig fields); empty = extractive fallback.
    summary_model: dict[str, Any] = field(default_factory=dict)
    summary_prompt_file: Optional[str] = None
    max_page_chars: int = 60_000
    jina_url: str = "https://r.jina.ai"
    jina_api_key_env: list[str] = field(default_factory=lambda: ["JINA_API_KEY"])
    user_agent: str = "webdancer/0.1 (+https://github.com/webdancer)"
    # URL patterns never fetched (webdancer.leaks; `webdancer eval` adds eval.blocklist).
    blocklist: list[str] = field(default_factory=list)
