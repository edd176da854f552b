"""The tool interface and the toolbox that runs calls with validation, timeouts and readable failures."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Optional

from webdancer.aio import within
from webdancer.errors import ConfigError, OutageError
from webdancer.records import ToolCall, ToolResult
from webdancer.toolstore import call_key

if TYPE_CHECKING:
    from webdancer.config import WebdancerConfig
    from webdancer.toolstore import ToolStore


@dataclass
class NoOptions:
    """Config of a component that takes no options."""


class Tool:
    """A tool the agent can call. Subclass it, set the class attributes, implement `call`.

    `call` returns the observation text. It may raise; the toolbox turns any exception into
    an error observation so one failing tool never kills a rollout.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    parameters: ClassVar[dict[str, Any]]
    Config: ClassVar[type] = NoOptions
    # Options that change how a call is made, not what it returns (besides timeouts, retries, keys, caches):
    # a recorded call (webdancer.toolstore) is replayed whatever their values.
    volatile_options: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    @classmethod
    def schema(cls) -> dict[str, Any]:
        return {"name": cls.name, "description": cls.description, "parameters": cls.parameters}

    async def call(self, arguments: dict[str, Any]) -> str:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release connections, caches, processes."""


class ToolSet(Tool):
    """A tool plugin that offers the tools it finds when the run starts (an MCP server's, say).

    Name it in `agent.tools` like any tool; entering the toolbox replaces it by what `open` returns.
    """

    parameters: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}}

    async def open(self) -> dict[str, Tool]:
        raise NotImplementedError

    async def call(self, arguments: dict[str, Any]) -> str:
        raise RuntimeError(f"{self.name} is a tool set: enter the toolbox (async with) to open its tools")


class ToolBox:
    """The tools offered to one agent, built from config; runs each call under a timeout."""

    def __init__(self, tools: dict[str, Tool], timeout_s: float = 60.0, store: Optional["ToolStore"] = None):
        self.tools = tools
        self.timeout_s = timeout_s
        self.store = store
        self._sets: list[ToolSet] = []
        plain = {name: tool for name, tool in tools.items() if not isinstance(tool, ToolSet)}  # sets: once opened
        self._prints = store.check_tools(plain) if store is not None else {}

    @classmethod
    def from_config(
        cls, names: list[str], tool_options: dict[str, dict[str, Any]], timeout_s: float = 60.0, plugins: Any = None,
        store: Optional["ToolStore"] = None,
    ) -> "ToolBox":
        """Build the named tools, each validated against its own Config from `tools.<name>`."""
        from webdancer.plugins import get_plugins

        plugins = plugins or get_plugins()
        tools = {name: plugins.build("tools", name, tool_options.get(name), f"tools.{name}") for name in names}
        return cls(tools, timeout_s, store)

    @classmethod
    def for_run(cls, cfg: "WebdancerConfig", names: Optional[list[str]] = None) -> "ToolBox":
        """The run's tools (`agent.tools`, or `names`) with their `tools.<name>` options, timeout and tool store."""
        from webdancer.toolstore import ToolStore

        store = ToolStore(cfg.tool_store) if cfg.tool_store.mode != "off" else None
        return cls.from_config(list(names or cfg.agent.tools), cfg.tools, cfg.agent.tool_timeout_s, store=store)

    async def open_toolsets(self) -> None:
        """Replace each tool set by the tools it offers (a name taken twice is an error naming both)."""
        opened: dict[str, Tool] = {}
        for name, tool in self.tools.items():
            if isinstance(tool, ToolSet):
                self._sets.append(tool)  # closed with the toolbox: it owns the connections its tools use
            found = await tool.open() if isinstance(tool, ToolSet) else {name: tool}
            for sub_name, sub_tool in found.items():
                if sub_name in opened or (sub_name in self.tools and sub_name != name):
                    raise ConfigError(f"tool name {sub_name!r} is offered twice: by {name!r} and by another tool of agent.tools; "
                                      "rename one (an MCP server's `name`, or the plugin's tool)")
                opened[sub_name] = sub_tool
        self.tools = opened
        if self.store is not None:
            self._prints = self.store.check_tools(self.tools)

    def schemas(self) -> list[dict[str, Any]]:
        return [tool.schema() for tool in self.tools.values()]

    async def run(self, call: ToolCall) -> ToolResult:
        start = time.perf_counter()
        tool = self.tools.get(call.name)
        if tool is None:
            known = ", ".join(self.tools) or "none"
            return ToolResult(call.name, f"[{call.name}] is not an available tool (available: {known})", error=True)
        store, key = self.store, None
        if store is not None:
            store.stats[call.name]["calls"] += 1
            # Live mode looks nothing up: the store keys the record when it writes its batch.
            key = None if store.mode == "live" else call_key(call.name, self._prints[call.name], call.arguments)
            hit = None if key is None else store.get(key)
            if hit is not None:
                store.stats[call.name]["hits"] += 1
                return ToolResult(call.name, hit[0], error=hit[1], elapsed_s=time.perf_counter() - start)
            if store.mode == "replay":
                store.stats[call.name]["replay_misses"] += 1
                args = json.dumps(call.arguments, ensure_ascii=False, sort_keys=True)
                return ToolResult(call.name, f"[{call.name}] replay: no recorded observation for {call.name}({args}) in {store.dir}", error=True)
            store.stats[call.name]["misses"] += 1
        try:
            content = str(await within(self.timeout_s, tool.call(call.arguments)))
            if store is not None and not content.startswith(f"[{call.name}]"):  # a tool's own failure notes are not recorded
                store.put(key, call.name, self._prints[call.name], call.arguments, content, False)
            return ToolResult(call.name, content, error=False, elapsed_s=time.perf_counter() - start)
        except asyncio.TimeoutError:
            msg = f"[{call.name}] timed out after {self.timeout_s:g} s"
        except OutageError:
            raise  # a backend outage ends the rollout as an outage; the model never sees it
        except Exception as exc:
            msg = f"[{call.name}] failed: {type(exc).__name__}: {exc}"
        return ToolResult(call.name, msg, error=True, elapsed_s=time.perf_counter() - start)

    async def aclose(self) -> None:
        for tool in [*self.tools.values(), *self._sets]:
            await tool.aclose()
        if self.store is not None:
            self.store.close()

    async def __aenter__(self) -> "ToolBox":
        if any(isinstance(tool, ToolSet) for tool in self.tools.values()):
            try:
                await self.open_toolsets()
            except BaseException:
                await self.aclose()
                raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
