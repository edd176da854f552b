"""`webdancer demo`."""

from __future__ import annotations

import os
from typing import Optional

import click

from webdancer.cli import config_options, resolve_config


@click.command("demo")
@config_options
@click.argument("overrides", nargs=-1)
@click.option("--host", default=None, help="Bind address (default demo.host).")
@click.option("--port", type=int, default=None, help="Port (default demo.port).")
def demo(config_path: Optional[str], overrides: tuple[str, ...], host: Optional[str], port: Optional[int]) -> None:
    """Serve the gradio demo: a question box and the agent's steps streamed as they happen."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline: no phoning home
    try:
        from webdancer_demo.app import build_app
    except ImportError as exc:
        raise click.ClickException(f"the demo needs gradio ({exc.name} is missing): pip install 'webdancer[demo]'") from None

    from webdancer_demo.app import choose_model

    cfg, which = choose_model(resolve_config(config_path, overrides))
    server = None
    if cfg.demo.serve_model:
        from webdancer_models.serve import start_server

        click.echo(f"starting the model server for {cfg.serve.model_path} ...")
        server = start_server(cfg.serve, cfg.run.dir / "logs")
    try:
        app = build_app(cfg, which)
        host, port = host or cfg.demo.host, port or cfg.demo.port
        click.echo(f"demo on http://{host}:{port}  (model: {which}; {cfg.model.base_url}, tools {', '.join(cfg.agent.tools)})")
        app.queue().launch(server_name=host, server_port=port, share=False, show_error=True, quiet=True)
    finally:
        if server is not None:
            server.stop()
