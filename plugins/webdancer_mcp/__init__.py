"""MCP both ways: the `mcp` tool set offers MCP servers' tools to the agent; `webdancer mcp serve` offers ours."""

from webdancer import hookimpl


@hookimpl
def register_tools(register):
    from webdancer_mcp.client import MCPTools

    register(MCPTools)


@hookimpl
def register_commands(cli):
    from webdancer_mcp.server import mcp_group

    cli.add_command(mcp_group)
