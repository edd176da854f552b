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


@hookimpl
def register_config_sections(register):
    from webdancer_web.config import WebConfig

    register(WebConfig)


@hookimpl
def config_loaded(cfg):
    """The web tools default to the configured offline web, so `web.root`/`web.port` are set in one place."""
    search = cfg.tools.setdefault("search", {})
    search.setdefault("web_root", cfg.web.root)
    visit = cfg.tools.setdefault("visit", {})
    visit.setdefault("local_sites", [f"{cfg.web.host}:{cfg.web.port}"])
