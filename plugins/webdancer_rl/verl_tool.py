"""verl's tool interface (`BaseTool`) over any webdancer tool plugin, looked up by name.

One class for every tool: verl's tool YAML names `webdancer_rl.verl_tool.WebdancerTool` with
`config.tool: <name>` and that tool's options, so a third-party tool plugin is usable in RL by
`pip install` alone. Importing this module also registers the `webdancer` tool parser and agent
loop with verl (see verl_agent.py), so the tool YAML is all a worker needs to load.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, Optional

from verl.tools.base_tool import BaseTool
from verl.tools.schemas import OpenAIFunctionToolSchema, ToolResponse

from webdancer.config import ToolStoreConfig
from webdancer.errors import OutageError
from webdancer.options import validate_options
from webdancer.records import ToolCall
from webdancer.tools import ToolBox
from webdancer.toolstore import ToolStore
from webdancer.wire import validate_arguments
from webdancer_rl.verl_agent import OUTAGE_FIELD  # importing it registers the parser and agent loop


def openai_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": schema["name"], "description": schema["description"], "parameters": schema["parameters"]}}


@dataclass
class SharedToolSet:
    """A tool set's toolbox shared by all its members in one worker process: verl builds one tool object per member,
    and each used to open the set itself (an MCP server with five tools was five sessions, five server processes
    over stdio, and a stateful server's tools did not see each other's state). Opened once, under the lock."""

    box: ToolBox
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    opened: bool = False


_TOOL_SETS: dict[str, SharedToolSet] = {}  # the set's config as JSON -> its shared toolbox


async def close_tool_sets() -> None:
    """Close every shared tool set of this process (their connections and tool stores), e.g. at the end of a test."""
    sets = list(_TOOL_SETS.values())
    _TOOL_SETS.clear()
    for shared in sets:
        await shared.box.aclose()


class WebdancerTool(BaseTool):
    """config: {type: native, tool: NAME, options: {...}, timeout_s: 60, tool_store: {mode, dir, prices} (optional)}.

    A tool set's tool (one of an MCP server's) adds `member: <its name>` (`rl prepare` writes both): the set is
    opened, in the worker's event loop, on the first call that needs it, once for all its members (SharedToolSet)."""

    def __init__(self, config: dict[str, Any], tool_schema: Optional[OpenAIFunctionToolSchema] = None):
        name = config.get("tool")
        if not name:
            raise ValueError("WebdancerTool needs `config.tool`: the webdancer tool's name (see `webdancer plugins`)")
        self._member: Optional[str] = config.get("member")
        self._set: Optional[SharedToolSet] = None
        if self._member is None:
            self._box = self._build_box(name, config)
            self._tool = self._box.tools[name]
            # verl's schema model keeps only type/description/enum per parameter; validate against ours.
            self.webdancer_parameters = self._tool.parameters
            if tool_schema is None:
                tool_schema = OpenAIFunctionToolSchema.model_validate(openai_schema(self._tool.schema()))
        else:
            if tool_schema is None:
                raise ValueError(f"WebdancerTool {name}/{self._member}: a tool set's tool needs its `tool_schema` (rerun `webdancer rl prepare`)")
            key = json.dumps([name, config.get("options") or {}, config.get("timeout_s", 60.0), config.get("tool_store")], sort_keys=True, default=str)
            if key not in _TOOL_SETS:
                _TOOL_SETS[key] = SharedToolSet(self._build_box(name, config))
            self._set = _TOOL_SETS[key]
            self._box = self._set.box
        super().__init__(config, tool_schema)
        self._opened = self._member is None
        self._instances: dict[str, dict[str, Any]] = {}

    @staticmethod
    def _build_box(name: str, config: dict[str, Any]) -> ToolBox:
        store = ToolStore(validate_options(ToolStoreConfig, config["tool_store"], "tool_store")) if config.get("tool_store") else None
        return ToolBox.from_config([name], {name: config.get("options") or {}}, float(config.get("timeout_s", 60.0)), store=store)

    async def _open(self) -> None:
        if self._opened:
            return
        assert self._set is not None  # only a tool set's member starts unopened
        async with self._set.lock:
            if not self._set.opened:
                await self._box.__aenter__()
                self._set.opened = True
        if self._member not in self._box.tools:
            raise ValueError(f"the tool set {self.config.get('tool')!r} no longer offers {self._member!r} (it offers "
                             f"{', '.join(self._box.tools)}); rerun `webdancer rl prepare`")
        self._tool = self._box.tools[self._member]
        self.webdancer_parameters = self._tool.parameters
        self._opened = True

    async def create(self, instance_id: Optional[str] = None, **kwargs) -> tuple[str, ToolResponse]:
        await self._open()
        instance_id, response = await super().create(instance_id, **kwargs)
        self._instances[instance_id] = {"calls": 0, "errors": 0}
        return instance_id, response

    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs) -> tuple[ToolResponse, float, dict]:
        await self._open()
        state = self._instances.setdefault(instance_id, {"calls": 0, "errors": 0})
        state["calls"] += 1
        problem = validate_arguments(parameters, self.webdancer_parameters)
        if problem:
            state["errors"] += 1
            return ToolResponse(text=f"[{self.name}] invalid arguments: {problem}"), 0.0, {"error": 1}
        try:
            result = await self._box.run(ToolCall(self.name, parameters))
        except OutageError as exc:  # verl's agent loop would show it to the model as the tool's answer: ours re-raises it
            agent_data = kwargs.get("agent_data")
            if agent_data is not None:
                agent_data.extra_fields[OUTAGE_FIELD] = exc
            raise
        state["errors"] += int(result.error)
        return ToolResponse(text=result.content), 0.0, {"error": int(result.error), "elapsed_s": result.elapsed_s}

    async def calc_reward(self, instance_id: str, **kwargs) -> float:
        return 0.0  # rewards are outcome-level (format + answer), computed by compute_score

    async def release(self, instance_id: str, **kwargs) -> None:
        self._instances.pop(instance_id, None)
