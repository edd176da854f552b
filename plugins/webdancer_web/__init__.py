"""The offline web and the web tools: `webdancer web build|serve`, tools `search` and `visit`."""

from __future__ import annotations

from webdancer import hookimpl
from webdancer_web import hookspecs  # noqa: F401  (the plugin's own extension points; the registry adds them)


@hookimpl
def register_tools(register):
    from webdancer_web.search import SearchTool
    from webdancer_web.visit import VisitTool

    register(SearchTool)
    register(VisitTool)


@hookimpl
def register_search_backends(register):
    from webdancer_web.corpus import CorpusSearch
    from webdancer_web.search import LocalSearch, SerperSearch

    register(LocalSearch)
    register(SerperSearch)
    register(CorpusSearch)


@hookimpl
def register_page_readers(register):
    from webdancer_web.corpus import CorpusReader
    from webdancer_web.readers import JinaReader, LocalReader

    register(LocalReader)
    register(JinaReader)
    register(CorpusReader)


@hookimpl
def register_commands(cli):
    from webdancer_web.cli import web

    cli.add_command(web)
