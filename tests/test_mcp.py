"""MCP both ways, with the official SDK on both ends: an MCP server's tools offered to the agent (listed, called,
timing out, the server crashing), and our tools served over stdio and streamable HTTP to the SDK's own client."""

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from toolkit import EchoTool
from webdancer_mcp.client import MCPConfig, MCPServerConfig, MCPTools

from webdancer.agent import Agent
from webdancer.config import AgentConfig, ModelConfig
from webdancer.errors import ConfigError, WebdancerError
from webdancer.policies import build_policy
from webdancer.records import ToolCall
from webdancer.testing.fake_openai import FakeOpenAIServer
from webdancer.tools import ToolBox
from webdancer.wire import render_assistant

STUB = str(Path(__file__).parent / "fixtures" / "mcp" / "stub_server.py")


def stub_tools(timeout_s=5.0, **server):
    return MCPTools(MCPConfig(servers=[MCPServerConfig(name="stub", command=sys.executable, args=[STUB], timeout_s=timeout_s, **server)]))


async def test_an_mcp_servers_tools_are_offered_called_and_fail_as_observations():
    async with ToolBox({"mcp": stub_tools(timeout_s=1.5)}, timeout_s=20) as box:
        schemas = {s["name"]: s for s in box.schemas()}
        assert set(schemas) == {"stub__shout", "stub__nap", "stub__die"}
        assert schemas["stub__shout"]["parameters"]["properties"]["text"]["type"] == "string"
        assert (await box.run(ToolCall("stub__shout", {"text": "hello"}))).content == "HELLO"
        slow = await box.run(ToolCall("stub__nap", {"seconds": 10}))
        assert slow.content == "[stub__nap] MCP server 'stub' timed out"
        assert (await box.run(ToolCall("stub__shout", {"text": "still here"}))).content == "STILL HERE"
        died = await box.run(ToolCall("stub__die", {}))
        after = await box.run(ToolCall("stub__shout", {"text": "anyone?"}))
        assert died.content.startswith("[stub__die] MCP server 'stub' failed")
        assert after.content.startswith("[stub__shout] MCP server 'stub' failed")  # an observation, not a crash


async def test_the_agent_calls_an_mcp_tool_in_its_loop():
    call = render_assistant("Ask the stub.", tool_call=ToolCall("stub__shout", {"text": "kilby"}))
    with FakeOpenAIServer([call, render_assistant("done", answer="KILBY")]) as srv:
        policy = build_policy("openai", {}, ModelConfig(base_url=srv.base_url, model="fake", max_retries=0))
        async with ToolBox({"mcp": stub_tools()}, timeout_s=20) as box:
            trajectory = await Agent(policy, box, AgentConfig(current_date="2026-11-27")).run("Shout kilby")
        await policy.aclose()
    assert trajectory.steps[0].tool_result.content == "KILBY" and trajectory.answer == "KILBY"
    assert "stub__shout" in srv.state.requests[0]["messages"][1]["content"]  # offered with the question


async def test_a_server_that_does_not_start_or_a_name_clash_stops_the_run_first():
    with pytest.raises(WebdancerError, match=r"MCP server 'stub' \(command /no/such/server\) did not start"):
        async with ToolBox({"mcp": MCPTools(MCPConfig(servers=[MCPServerConfig(name="stub", command="/no/such/server")]))}):
            pass
    clash = EchoTool()
    clash.name = "stub__shout"
    with pytest.raises(ConfigError, match="tool name 'stub__shout' is offered twice"):
        async with ToolBox({"stub__shout": clash, "mcp": stub_tools()}, timeout_s=20):
            pass
    with pytest.raises(ConfigError, match="each server needs a unique `name` and either `command`"):
        MCPTools(MCPConfig(servers=[MCPServerConfig(name="x", command="a", url="http://b")]))


def served_args(web):
    return [f"web.root={web.root}", f"web.port={web.port}", "agent.tools=[search]", "tools.visit.cache_dir=null"]


async def check_our_search(session):
    await session.initialize()
    listed = await session.list_tools()
    [search] = listed.tools
    assert search.name == "search" and search.inputSchema["required"] == ["query"]
    result = await session.call_tool("search", {"query": ["integrated circuit"]})
    assert not result.isError and "## Web Results" in result.content[0].text
    bad = await session.call_tool("search", {"query": "not a list"})
    assert bad.isError


def test_our_tools_served_over_stdio_to_the_sdk_client(local_web):
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    web, _, _ = local_web

    async def go():
        params = StdioServerParameters(command=sys.executable, args=["-m", "webdancer_mcp.server", *served_args(web)], env=dict(os.environ))
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await check_our_search(session)

    asyncio.run(go())


def test_our_tools_served_over_streamable_http_to_the_sdk_client(local_web, tmp_path):
    from conftest import free_port
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    web, _, _ = local_web
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "webdancer_mcp.server", "--http", str(port), *served_args(web)], stdout=log, stderr=log)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            time.sleep(0.2)

        async def go():
            async with streamable_http_client(f"http://127.0.0.1:{port}/mcp") as (read, write, _), ClientSession(read, write) as session:
                await check_our_search(session)

        asyncio.run(go())

        async def through_our_client():  # the other way round: the `mcp` tool set on an HTTP server (ours)
            url = f"http://127.0.0.1:{port}/mcp"
            with pytest.raises(WebdancerError, match="allow it in tools.mcp.allowed_hosts"):
                async with ToolBox({"mcp": MCPTools(MCPConfig(servers=[MCPServerConfig(name="web", url=url)]))}):
                    pass
            allowed = MCPConfig(servers=[MCPServerConfig(name="web", url=url)], allowed_hosts=[f"127.0.0.1:{port}"])
            async with ToolBox({"mcp": MCPTools(allowed)}, timeout_s=30) as box:
                result = await box.run(ToolCall("web__search", {"query": ["integrated circuit"]}))
            assert "## Web Results" in result.content

        asyncio.run(through_our_client())

        # DNS rebinding: a page from another origin, or a Host that is not this machine's loopback name, is refused.
        import httpx

        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
        headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
        url = f"http://127.0.0.1:{port}/mcp/"
        assert httpx.post(url, json=body, headers=headers).status_code == 200
        assert httpx.post(url, json=body, headers={**headers, "host": "evil.example.com"}).status_code == 421
        assert httpx.post(url, json=body, headers={**headers, "origin": "http://evil.example.com"}).status_code == 403
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_webdancer_tool_calls_an_mcp_tool_by_its_prefixed_name(plugins):
    from click.testing import CliRunner

    from webdancer.cli import cli

    servers = f"tools.mcp.servers=[{{name: stub, command: '{sys.executable}', args: ['{STUB}']}}]"
    result = CliRunner().invoke(cli, ["tool", "stub__shout", '{"text": "offline web"}', "agent.tools=[mcp]", servers])
    assert result.exit_code == 0 and result.output.strip() == "OFFLINE WEB", result.output
    unknown = CliRunner().invoke(cli, ["tool", "stub__whisper", "{}", "agent.tools=[mcp]", servers])
    assert unknown.exit_code == 2 and "the run offers stub__shout, stub__nap, stub__die" in unknown.output


def test_mcp_tools_are_offered_in_rl_data_and_to_the_trl_engines_rollouts(local_web, tiny_model, tmp_path):
    """`rl prepare` lists an MCP server's tools (started to ask them) in the prompt and verl's tool YAML (the set
    and the member); the TRL engine's rollouts open the set in their own event loop and call its tools."""
    import yaml
    from transformers import AutoTokenizer
    from webdancer_rl.prepare import check_prepared, prepare, read_rows
    from webdancer_rl.trl_engine import BackgroundLoop, WebdancerRollouts

    from webdancer.config_loader import load_config
    from webdancer.records import QAItem

    web, _, _ = local_web
    servers = f"tools.mcp.servers=[{{name: stub, command: '{sys.executable}', args: ['{STUB}']}}]"
    cfg = load_config(None, [f"web.root={web.root}", f"web.port={web.port}", "agent.tools=[search, mcp]", servers, "rl.val_fraction=0.0"])
    items = [QAItem("Who invented the integrated circuit?", "Jack Kilby")]
    data = prepare(items, cfg, tmp_path / "rl_data")
    entries = yaml.safe_load(data.tool_config.read_text())["tools"]
    assert [(e["config"]["tool"], e["config"].get("member"), e["tool_schema"]["function"]["name"]) for e in entries] == [
        ("search", None, "search"), ("mcp", "stub__shout", "stub__shout"), ("mcp", "stub__nap", "stub__nap"), ("mcp", "stub__die", "stub__die")]
    assert entries[1]["tool_schema"]["function"]["parameters"]["properties"]["text"]["type"] == "string"
    [row] = read_rows(data.train)
    assert "stub__shout" in row["prompt"][0]["content"] + row["prompt"][-1]["content"]
    check_prepared(cfg, data.train.parent)  # the set is named once in agent.tools and matches

    loop = BackgroundLoop()
    rollouts = WebdancerRollouts(cfg, AutoTokenizer.from_pretrained(str(tiny_model)), read_rows(data.train), loop)
    rollouts.open()  # what the engine does once its trainer is built
    try:
        assert list(rollouts.toolbox.tools) == ["search", "stub__shout", "stub__nap", "stub__die"]
        shouted = loop.run(rollouts.toolbox.run(ToolCall("stub__shout", {"text": "offline web"})))
        assert shouted.content == "OFFLINE WEB" and not shouted.error
    finally:
        rollouts.close()
        loop.close()
