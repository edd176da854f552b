"""The tool interface and the toolbox that runs calls with validation, timeouts and readable failures."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from webdancer.errors import OutageError
from webdancer.records import ToolCall, ToolResult


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

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()

    @classmethod
    def schema(cls) -> dict[str, Any]:
        return {"name": cls.name, "description": cls.description, "parameters": cls.parameters}

    async def call(self, arguments: dict[str, Any]) -> str:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release connections, caches, processes."""


class ToolBox:
    """The tools offered to one agent, built from config; runs each call under a timeout."""

    def __init__(self, tools: dict[str, Tool], timeout_s: float = 60.0):
        self.tools = tools
        self.timeout_s = timeout_s

    @classmethod
    def from_config(
        cls, names: list[str], tool_options: dict[str, dict[str, Any]], timeout_s: float = 60.0, plugins: Any = None
    ) -> "ToolBox":
        """Build the named tools, each validated against its own Config from `tools.<name>`."""
        from webdancer.plugins import get_plugins

        plugins = plugins or get_plugins()
        return cls({name: plugins.build("tools", name, tool_options.get(name), f"tools.{name}") for name in names}, timeout_s)

    def schemas(self) -> list[dict[str, Any]]:
        return [tool.schema() for tool in self.tools.values()]

    async def run(self, call: ToolCall) -> ToolResult:
        start = time.perf_counter()
        tool = self.tools.get(call.name)
        if tool is None:
            known = ", ".join(self.tools) or "none"
            return ToolResult(call.name, f"[{call.name}] is not an available tool (available: {known})", error=True)
        try:
            content = await asyncio.wait_for(tool.call(call.arguments), timeout=self.timeout_s)
            return ToolResult(call.name, str(content), error=False, elapsed_s=time.perf_counter() - start)
        except asyncio.TimeoutError:
            msg = f"[{call.name}] timed out after {self.timeout_s:g} s"
        except OutageError:
            raise  # a backend outage ends the rollout as an outage; the model never sees it
        except Exception as exc:
            msg = f"[{call.name}] failed: {type(exc).__name__}: {exc}"
        return ToolResult(call.name, msg, error=True, elapsed_s=time.perf_counter() - start)

    async def aclose(self) -> None:
        for tool in self.tools.values():
            await tool.aclose()

    async def __aenter__(self) -> "ToolBox":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
