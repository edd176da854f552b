"""Leak blocking while evaluating: pages that hold a benchmark's answers are never shown to the agent.

A blocklist pattern is a domain (`example.org`: that host and its subdomains), a URL glob without the
scheme (`huggingface.co/datasets/gaia-benchmark/*`, `*browse_comp_test_set*`), or a regular
expression after `re:` matched against the whole URL. The `search` tool drops blocked results
(whatever backend found them) and `visit` refuses blocked URLs (whatever reader would fetch them);
each counts what it blocked, and `webdancer eval` reports the counts.
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from typing import Optional
from urllib.parse import urlsplit

from webdancer.errors import ConfigError

# The benchmarks' own releases and their known copies: on by default for `webdancer eval` (eval.blocklist).
BENCHMARK_SOURCES = [
    "huggingface.co/datasets/gaia-benchmark/*",
    "huggingface.co/spaces/gaia-benchmark/*",
    "huggingface.co/datasets/callanwu/WebWalkerQA*",
    "github.com/Alibaba-NLP/WebWalker*",
    "github.com/Alibaba-NLP/WebAgent*",
    "openaipublic.blob.core.windows.net/simple-evals/*",
    "github.com/openai/simple-evals*",
    "huggingface.co/datasets/xbench/*",
    "github.com/xbench-ai/*",
    "huggingface.co/datasets/PALIN2018/BrowseComp-ZH*",
    "github.com/PALIN2018/BrowseComp-ZH*",
]


class Blocklist:
    """Compiled patterns, and counts of what they blocked (search results dropped, visits refused)."""

    def __init__(self, patterns: list[str], where: str = "blocklist"):
        self.patterns = list(patterns)
        self.counts: Counter = Counter()
        self._domains: list[tuple[str, str]] = []
        self._globs: list[tuple[str, str]] = []
        self._regexes: list[tuple[str, re.Pattern]] = []
        for pattern in self.patterns:
            if not isinstance(pattern, str) or not pattern.strip():
                raise ConfigError(f"{where}: {pattern!r} is not a pattern; give a domain, a URL glob or re:<regex>")
            if pattern.startswith("re:"):
                try:
                    self._regexes.append((pattern, re.compile(pattern[3:], re.I)))
                except re.error as exc:
                    raise ConfigError(f"{where}: {pattern!r} is not a valid regular expression ({exc})") from None
            elif "/" in pattern or "*" in pattern or "?" in pattern:
                self._globs.append((pattern, pattern.lower().removeprefix("https://").removeprefix("http://")))
            else:
                self._domains.append((pattern, pattern.lower().strip(".")))

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def match(self, url: str) -> Optional[str]:
        """The pattern that blocks `url`, or None."""
        parts = urlsplit(url if "://" in url else f"http://{url}")
        host = (parts.hostname or "").lower()
        port = f":{parts.port}" if parts.port else ""
        bare = (host + port + parts.path + (f"?{parts.query}" if parts.query else "")).lower()
        for pattern, domain in self._domains:
            if host == domain or host.endswith("." + domain):
                return pattern
        for pattern, glob in self._globs:
            if fnmatch.fnmatchcase(bare, glob) or fnmatch.fnmatchcase(bare.rstrip("/"), glob):
                return pattern
        for pattern, regex in self._regexes:
            if regex.search(url):
                return pattern
        return None

    def blocks(self, url: str, what: str) -> bool:
        """True (and counted under `what`: search_results | visits) when `url` is blocked."""
        if self.match(url) is None:
            return False
        self.counts[what] += 1
        return True
