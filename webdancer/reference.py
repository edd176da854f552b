"""Read the WebDancer reference release's SFT trajectories (`sample_traj.jsonl`) as our Trajectory records."""

from __future__ import annotations

import json
import re
from typing import Any

from webdancer.errors import RecordError
from webdancer.records import Message, Step, ToolResult, Trajectory, stable_id
from webdancer.wire import parse_assistant, unwrap_tool_response

_TOOLS_BLOCK = re.compile(r"<tools>\s*(.*?)\s*</tools>", re.S)
_STR_LIST = {"type": "array", "items": {"type": "string"}}
# The reference's `functions` field says `queries`, but its prompt and every call use `query`.
_FALLBACK_TOOLS = [
    {"name": "search", "description": "web search", "parameters": {"type": "object", "properties": {"query": _STR_LIST}, "required": ["query"]}},
    {"name": "visit", "description": "read pages", "parameters": {"type": "object", "properties": {"url": _STR_LIST, "goal": {"type": "string"}}, "required": ["url", "goal"]}},
]


def is_reference_record(obj: dict[str, Any]) -> bool:
    return obj.get("type") == "chatml" and "messages" in obj and "steps" not in obj


def _tools(user_prompt: str) -> list[dict[str, Any]]:
    match = _TOOLS_BLOCK.search(user_prompt)
    if match:
        try:
            tools = json.loads("[" + match.group(1) + "]")
            if all(isinstance(t, dict) and "name" in t and "parameters" in t for t in tools):
                return tools
        except json.JSONDecodeError:
            pass
    return _FALLBACK_TOOLS


def reference_to_trajectory(obj: dict[str, Any], where: str = "") -> Trajectory:
    try:
        messages = [Message(m["role"], m["content"]) for m in obj["messages"]]
    except (KeyError, TypeError) as exc:
        raise RecordError(f"{where}: reference record has malformed messages ({exc})") from None
    if len(messages) < 3 or messages[0].role != "system" or messages[1].role != "user":
        raise RecordError(f"{where}: reference record must start with system and user turns")
    question = messages[1].content.rsplit("User:", 1)[-1].strip()
    tools = _tools(messages[1].content)
    params = {t["name"]: t["parameters"] for t in tools}
    steps: list[Step] = []
    for i, msg in enumerate(messages[2:], start=2):
        if msg.role != "assistant":
            continue
        turn = parse_assistant(msg.content, params)
        step = Step(index=len(steps), raw_output=msg.content, thought=turn.thought, tool_call=turn.tool_call, answer=turn.answer,
                    parse_error=turn.error, wrote_tool_response=turn.wrote_tool_response)
        if i + 1 < len(messages) and messages[i + 1].role == "user":
            obs = unwrap_tool_response(messages[i + 1].content)
            if obs is not None:
                step.tool_result = ToolResult(turn.tool_call.name if turn.tool_call else "", obs)
        steps.append(step)
    answers = obj.get("answer") or []
    reference = answers[0][0] if answers and isinstance(answers[0], list) and answers[0] else None
    qid = stable_id(question)
    last = steps[-1] if steps else None
    return Trajectory(
        id=f"{qid}:ref",
        question=question,
        messages=messages,
        steps=steps,
        answer=last.answer if last else None,
        termination="answered" if last and last.answer is not None else "max_turns",
        question_id=qid,
        reference_answer=reference,
        policy="reference",
        model="webdancer-release",
        tools=tools,
        provenance={"tag": obj.get("tag", ""), "source": "WebDancer reference release"},
    )


def load_trajectory(obj: dict[str, Any], where: str = "") -> Trajectory:
    """A trajectory record of ours, or a reference-release record converted on the way in."""
    from webdancer.records import record_from_dict

    return reference_to_trajectory(obj, where) if is_reference_record(obj) else record_from_dict(Trajectory, obj, where)
