"""`webdancer web build` and `webdancer web serve`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from webdancer.cli import config_options, resolve_config


@click.group("web")
def web() -> None:
    """Build and serve the offline web (real HTML sites on loopback, with a search index)."""


@web.command("build")
@config_options
@click.argument("overrides", nargs=-1)
def build_cmd(config_path: Optional[str], overrides: tuple[str, ...]) -> None:
    """Build the sites of `web.sites` into `web.root`: served sites, page store, BM25 index."""
    from webdancer_web.build import build_web

    cfg = resolve_config(config_path, overrides).web
    stats = build_web(cfg.sites, Path(cfg.root), cfg.base_url, progress=lambda site, n: click.echo(f"  {site}: {n} pages"))
    click.echo(f"built {stats.pages} pages in {stats.seconds:.1f} s ({stats.pages_per_s:.0f} pages/s) into {cfg.root}")


@web.command("serve")
@config_options
@click.argument("overrides", nargs=-1)
def serve_cmd(config_path: Optional[str], overrides: tuple[str, ...]) -> None:
    """Serve the built sites over HTTP on web.host:web.port until interrupted."""
    from webdancer_web.server import LocalWebServer

    cfg = resolve_config(config_path, overrides).web
    server = LocalWebServer(Path(cfg.root), cfg.host, cfg.port)
    sites = ", ".join(f"{server.url}/{s['name']}/" for s in server.manifest["sites"])
    click.echo(f"serving {server.manifest['pages']} pages: {sites}", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
