"""The `mcp` tool set: each tool of the configured MCP servers becomes a webdancer tool named `<server>__<tool>`.

Servers are started (stdio) or connected (streamable HTTP) when the run's toolbox opens, with the
official MCP SDK. A server that does not start stops the run before any rollout, naming it; a call
that times out, a server that crashes or answers garbage, becomes the observation of that call
and the rollout goes on. HTTP servers pass the same address guard as `visit` unless allowed.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Optional

from webdancer.errors import ConfigError, WebdancerError
from webdancer.tools import Tool, ToolSet


@dataclass
class MCPServerConfig:
    name: str = ""  # the prefix of its tools' names
    command: str = ""  # stdio: the program to start ...
    args: list[str] = field(default_factory=list)  # ... with these arguments
    env: dict[str, str] = field(default_factory=dict)  # added to the environment of a stdio server
    url: str = ""  # streamable HTTP: the server's endpoint (e.g. http://host:port/mcp)
    timeout_s: float = 30.0  # per call
    start_timeout_s: float = 60.0  # to start (stdio) or connect, and list the tools


@dataclass
class MCPConfig:
    servers: list[MCPServerConfig] = field(default_factory=list)
    # host:port of HTTP servers that may be on loopback or a private network (the address guard refuses them otherwise).
    allowed_hosts: list[str] = field(default_factory=list)


class MCPTool(Tool):
    """One tool of one MCP server, called through its session."""

    def __init__(self, server: MCPServerConfig, session: Any, spec: Any):
        super().__init__()
        self.server, self.session, self.remote_name = server, session, spec.name
        self.name = f"{server.name}__{spec.name}"
        self.description = spec.description or f"{spec.name} (MCP server {server.name})"
        self.parameters = dict(spec.inputSchema or {"type": "object", "properties": {}})

    def schema(self) -> dict[str, Any]:  # per instance: the class attributes are not this tool's
        return {"name": self.name, "description": self.description, "parameters": self.parameters}

    async def call(self, arguments: dict[str, Any]) -> str:
        try:
            result = await self.session.call_tool(self.remote_name, arguments, read_timeout_seconds=timedelta(seconds=self.server.timeout_s))
        except Exception as exc:  # the SDK raises McpError on timeouts and protocol errors, anyio errors when the server died
            reason = "timed out" if "timed out" in str(exc).lower() else f"failed: {type(exc).__name__}: {str(exc)[:200]}"
            return f"[{self.name}] MCP server '{self.server.name}' {reason}"
        text = "\n".join(getattr(block, "text", "") or f"[{getattr(block, 'type', 'content')} content]" for block in result.content)
        return f"[{self.name}] error: {text}" if result.isError else text


class MCPTools(ToolSet):
    name = "mcp"
    description = "The tools of the MCP servers in tools.mcp.servers, each named <server>__<tool>."
    Config = MCPConfig

    def __init__(self, config: Optional[MCPConfig] = None):
        super().__init__(config)
        self.stack = contextlib.AsyncExitStack()
        names = [s.name for s in self.config.servers]
        bad = [s.name or "(unnamed)" for s in self.config.servers if not s.name or bool(s.command) == bool(s.url)]
        if bad or len(set(names)) != len(names):
            raise ConfigError("tools.mcp.servers: each server needs a unique `name` and either `command` (stdio) or `url` "
                              f"(streamable HTTP); check {', '.join(bad) or 'the duplicate names'}")

    async def open(self) -> dict[str, Tool]:
        tools: dict[str, Tool] = {}
        for server in self.config.servers:
            try:
                session = await asyncio.wait_for(self._connect(server), timeout=server.start_timeout_s)
                listed = await asyncio.wait_for(session.list_tools(), timeout=server.start_timeout_s)
            except WebdancerError:
                raise
            except BaseException as exc:  # start failures arrive as OSError, TimeoutError, McpError or exception groups
                how = f"command {' '.join([server.command, *server.args])}" if server.command else f"url {server.url}"
                raise WebdancerError(f"tools.mcp: MCP server '{server.name}' ({how}) did not start or answer: "
                                     f"{type(exc).__name__}: {str(exc)[:200]}") from None
            for spec in listed.tools:
                tool = MCPTool(server, session, spec)
                tools[tool.name] = tool
        return tools

    async def _connect(self, server: MCPServerConfig) -> Any:
        from mcp import ClientSession

        if server.command:
            from mcp.client.stdio import StdioServerParameters, stdio_client

            params = StdioServerParameters(command=server.command, args=list(server.args), env={**_base_env(), **server.env})
            read, write = await self.stack.enter_async_context(stdio_client(params, errlog=_devnull()))
        else:
            from mcp.client.streamable_http import streamable_http_client
            from webdancer_web.guard import refusal

            problem = await refusal(server.url, self.config.allowed_hosts)
            if problem:
                raise WebdancerError(f"tools.mcp: server '{server.name}' at {server.url}: {problem} (allow it in tools.mcp.allowed_hosts)")
            read, write, _ = await self.stack.enter_async_context(streamable_http_client(server.url))
        session = await self.stack.enter_async_context(ClientSession(read, write))
        await session.initialize()
        return session

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.stack.aclose()


def _base_env() -> dict[str, str]:
    import os

    return dict(os.environ)


def _devnull():
    import os

    return open(os.devnull, "w")
