"""Our wire format inside verl: a `webdancer` tool parser and the `webdancer_agent` agent loop.

verl's own `ToolAgentLoop` already does what a WebDancer rollout needs (generate, run the tool
calls, append `tool` messages, mask them out of the loss), and the exported models' chat template
renders `tool` messages as `<tool_response>` user turns. What differs is parsing: we parse each
turn with `webdancer.wire.parse_assistant`, the same rules as sampling, filtering and eval — one
think block, one call or one answer, and a turn that writes its own `<tool_response>` gets no tool
call (the rollout ends there and the format reward says why).
"""

from __future__ import annotations

import json
from typing import Any

from verl.experimental.agent_loop.agent_loop import register
from verl.experimental.agent_loop.tool_agent_loop import ToolAgentLoop
from verl.experimental.agent_loop.tool_parser import FunctionCall, ToolParser

from webdancer.wire import parse_assistant

PARSER = "webdancer"
AGENT_LOOP = "webdancer_agent"


def tool_parameters(tools: Any) -> dict[str, dict[str, Any]]:
    params = {}
    for tool in tools or []:
        fn = tool.function if hasattr(tool, "function") else tool.get("function", tool)
        name = fn.name if hasattr(fn, "name") else fn["name"]
        raw = fn.parameters.model_dump(exclude_none=True) if hasattr(fn, "parameters") else fn.get("parameters", {})
        params[name] = raw
    return params


@ToolParser.register(PARSER)
class WebdancerToolParser(ToolParser):
    async def extract_tool_calls(self, responses_ids: list[int], tools: Any = None) -> tuple[str, list[FunctionCall]]:
        text = self.tokenizer.decode(responses_ids, skip_special_tokens=True)
        # verl's schema copy drops array `items`, so these checks are looser than the tool's own;
        # the tool adapter validates again against the full schema.
        parsed = parse_assistant(text, tool_parameters(tools))
        if parsed.tool_call is None or parsed.error is not None or parsed.wrote_tool_response:
            return text, []
        call = FunctionCall(name=parsed.tool_call.name, arguments=json.dumps(parsed.tool_call.arguments, ensure_ascii=False))
        return parsed.thought, [call]


@register(AGENT_LOOP)
class WebdancerAgentLoop(ToolAgentLoop):
    """verl's tool agent loop with our parser, whatever `multi_turn.format` says."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tool_parser = ToolParser.get_tool_parser(PARSER, self.tokenizer)
        self.tool_parser_name = PARSER
