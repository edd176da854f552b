"""`webdancer mcp serve`: the configured tools (`agent.tools`: the offline web's search and visit, or any plugin
tool) as an MCP server over stdio or streamable HTTP, with the official MCP SDK."""

from __future__ import annotations

import asyncio
from typing import Any, Optional, Sequence

import click


def build_server(toolbox: Any) -> Any:
    """An MCP server whose tools are `toolbox`'s, with their own JSON schemas; each call runs through the toolbox
    (timeouts, the tool store), and a failed call is an MCP tool error with the same text the agent would see."""
    from mcp import types
    from mcp.server.lowlevel import Server

    from webdancer import __version__
    from webdancer.records import ToolCall

    server = Server("webdancer", version=__version__)

    @server.list_tools()
    async def list_tools() -> list[types.Tool]:
        return [types.Tool(name=s["name"], description=s["description"], inputSchema=s["parameters"]) for s in toolbox.schemas()]

    @server.call_tool()
    async def call_tool(name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        result = await toolbox.run(ToolCall(name, arguments))
        return types.CallToolResult(content=[types.TextContent(type="text", text=result.content)], isError=result.error)

    return server


async def serve_stdio(toolbox: Any) -> None:
    from mcp.server.stdio import stdio_server

    server = build_server(toolbox)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def http_app(toolbox: Any, allowed_hosts: Sequence[str] = (), allowed_origins: Sequence[str] = ()) -> Any:
    """A Starlette app serving the MCP endpoint at /mcp (streamable HTTP, JSON responses).

    Requests whose Host is not a loopback name (any port) or one of `allowed_hosts`, or whose Origin is not a loopback
    origin or one of `allowed_origins`, are refused by the MCP SDK's own transport security (421 / 403): a web page
    the user opens cannot reach our tools through DNS rebinding."""
    import contextlib

    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
    from mcp.server.transport_security import TransportSecuritySettings
    from starlette.applications import Starlette
    from starlette.routing import Mount

    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{name}:*" for name in LOOPBACK_NAMES] + list(allowed_hosts),
        allowed_origins=[f"http://{name}:*" for name in LOOPBACK_NAMES] + list(allowed_origins),
    )
    manager = StreamableHTTPSessionManager(app=build_server(toolbox), json_response=True, stateless=True, security_settings=security)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with manager.run():
            yield

    return Starlette(routes=[Mount("/mcp", app=manager.handle_request)], lifespan=lifespan)


@click.group("mcp")
def mcp_group() -> None:
    """MCP: offer the configured tools to other agents and desktop clients."""


@mcp_group.command("serve")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), default=None, help="YAML config (see configs/).")
@click.argument("overrides", nargs=-1)
@click.option("--http", "port", type=int, default=None, help="Serve streamable HTTP on this port (endpoint /mcp) instead of stdio.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--allow-host", "allow_hosts", multiple=True, help="HTTP: a Host header to accept besides loopback names (NAME:PORT, or NAME:* for any port).")
@click.option("--allow-origin", "allow_origins", multiple=True, help="HTTP: an Origin to accept besides loopback ones (e.g. https://app.example:443).")
def serve_cmd(config_path: Optional[str], overrides: tuple[str, ...], port: Optional[int], host: str, allow_hosts: tuple[str, ...],
              allow_origins: tuple[str, ...]) -> None:
    """Serve the tools of agent.tools (with their tools.<name> options) over MCP: stdio by default, HTTP with --http."""
    from webdancer.config_loader import load_config
    from webdancer.http import is_loopback
    from webdancer.tools import ToolBox

    cfg = load_config(config_path, overrides)

    async def run() -> None:
        async with ToolBox.for_run(cfg) as toolbox:
            if port is None:
                await serve_stdio(toolbox)
            else:
                import uvicorn

                click.echo(f"MCP (streamable HTTP) at http://{host}:{port}/mcp: {', '.join(toolbox.tools)}", err=True)
                if not is_loopback(host) and not allow_hosts:
                    click.echo(f"bound to {host}: requests are accepted only with a loopback Host header; add --allow-host NAME:{port} "
                               "for each name clients reach this machine by", err=True)
                app = http_app(toolbox, allow_hosts, allow_origins)
                await uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning")).serve()

    asyncio.run(run())


def main() -> None:
    """`python -m webdancer_mcp.server [overrides]`: what `webdancer mcp serve` runs (for MCP client configs)."""
    serve_cmd(prog_name="webdancer-mcp")


if __name__ == "__main__":
    main()
