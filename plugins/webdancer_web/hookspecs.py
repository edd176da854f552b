"""The web plugin's own extension points: search backends for `search`, page readers for `visit`."""

from webdancer.hookspecs import hookspec


@hookspec
def register_search_backends(register):
    """Register search backends (subclasses of `webdancer_web.search.SearchBackend`) for the `search` tool.

    Selected by `tools.search.backend`; first-party: `local` (BM25 over the local web), `serper`, `corpus` (a user's JSONL/parquet corpus).
    """


@hookspec
def register_page_readers(register):
    """Register page readers (subclasses of `webdancer_web.readers.PageReader`) for the `visit` tool.

    A reader turns a URL into page text; selected by `tools.visit.reader`; first-party: `local`, `jina`, `corpus`.
    """
