"""The agent's wire format (the WebDancer reference's): one parser and one renderer for every stage.

Assistant turns are `<think>…</think>` then one `<tool_call>{json}</tool_call>` or one
`<answer>…</answer>`; tool results come back as a user turn in `<tool_response>…</tool_response>`.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from typing import Any, Optional

from webdancer.jsonl import json_bytes
from webdancer.prompt_template import PromptTemplate
from webdancer.records import Message, ToolCall

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
RESP_OPEN, RESP_CLOSE = "<tool_response>", "</tool_response>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"

_CALL_RE = re.compile(re.escape(CALL_OPEN) + r"(.*?)" + re.escape(CALL_CLOSE), re.S)
_ANSWER_RE = re.compile(re.escape(ANSWER_OPEN) + r"(.*?)" + re.escape(ANSWER_CLOSE), re.S)
_JSON_TYPES = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


@dataclass
class ParsedTurn:
    """One assistant turn, parsed. `error` is set when the turn is unusable, and is what the model is told."""

    text: str
    thought: str = ""
    tool_call: Optional[ToolCall] = None
    answer: Optional[str] = None
    error: Optional[str] = None
    wrote_tool_response: bool = False


def _strip_own_tool_response(text: str) -> tuple[str, bool]:
    """Cut everything from a `<tool_response>` the model wrote itself: it would be a made-up observation."""
    idx = text.find(RESP_OPEN)
    if idx < 0:
        return text, False
    return text[:idx].rstrip(), True


def _thought(text: str) -> str:
    if THINK_CLOSE in text:
        before = text.split(THINK_CLOSE, 1)[0]
        return before.split(THINK_OPEN, 1)[-1].strip()
    cut = min([i for i in (text.find(CALL_OPEN), text.find(ANSWER_OPEN)) if i >= 0], default=len(text))
    return text[:cut].replace(THINK_OPEN, "").strip()


def _check_type(value: Any, spec: dict[str, Any]) -> bool:
    expected = spec.get("type")
    if expected is None:
        return True
    types = _JSON_TYPES.get(expected)
    if types is None:
        return True
    if expected in ("integer", "number") and isinstance(value, bool):
        return False
    if not isinstance(value, types):
        return False
    if expected == "array" and "items" in spec:
        return all(_check_type(v, spec["items"]) for v in value)
    return True


def validate_arguments(arguments: dict[str, Any], parameters: dict[str, Any]) -> Optional[str]:
    """Check arguments against a tool's JSON schema (required, known, top-level types); None when fine."""
    props = parameters.get("properties", {}) or {}
    for req in parameters.get("required", []) or []:
        if req not in arguments:
            return f"missing required argument '{req}'"
    for key, value in arguments.items():
        if key not in props:
            if parameters.get("additionalProperties", False) is False and props:
                return f"unknown argument '{key}' (expected: {', '.join(props)})"
            continue
        if not _check_type(value, props[key]):
            spec = props[key]
            want = spec.get("type")
            if want == "array" and "items" in spec:
                want = f"array of {spec['items'].get('type', 'values')}"
            return f"argument '{key}' must be {want}, got {json.dumps(value, ensure_ascii=False)[:80]}"
    return None


def parse_assistant(text: str, tools: dict[str, dict[str, Any]]) -> ParsedTurn:
    """Parse one assistant turn against the offered tools (name -> JSON schema of its parameters).

    Never raises: every malformed turn comes back with `error` set to a message for the model.
    """
    text, wrote_response = _strip_own_tool_response(text or "")
    turn = ParsedTurn(text=text, thought=_thought(text), wrote_tool_response=wrote_response)

    def fail(msg: str) -> ParsedTurn:
        turn.error = msg
        return turn

    if not text.strip():
        return fail("Your reply was empty. Think, then call a tool or give the final <answer>.")
    if text.count(THINK_OPEN) > 1 or text.count(THINK_CLOSE) > 1:
        return fail("Use one <think> </think> block per turn.")
    if THINK_OPEN in text and THINK_CLOSE not in text:
        return fail("Your <think> block is not closed with </think>.")
    calls = _CALL_RE.findall(text)
    answers = _ANSWER_RE.findall(text)
    if text.count(CALL_OPEN) != len(calls) or text.count(CALL_CLOSE) != len(calls):
        return fail("A <tool_call> is not closed: write <tool_call> {json} </tool_call>.")
    if text.count(ANSWER_OPEN) != len(answers) or text.count(ANSWER_CLOSE) != len(answers):
        return fail("The <answer> is not closed: write <answer> ... </answer>.")
    if calls and answers:
        return fail("Either call a tool or answer, not both in one turn.")
    if len(answers) > 1:
        return fail("Give exactly one <answer>.")
    if answers:
        answer = answers[0].strip()
        if not answer:
            return fail("The <answer> is empty.")
        turn.answer = answer
        return turn
    if not calls:
        return fail("No tool call and no answer found. Call a tool with <tool_call> {json} </tool_call> or give the final <answer>.")
    if len(calls) > 1:
        return fail("Call one tool per turn; you called several.")
    body = calls[0].strip()
    try:
        payload = json.loads(body)
    except json.JSONDecodeError as exc:
        return fail(f"The tool call is not valid JSON ({exc.msg} at position {exc.pos}). Write {{\"name\": ..., \"arguments\": {{...}}}}.")
    if not isinstance(payload, dict):
        return fail("The tool call must be a JSON object with \"name\" and \"arguments\".")
    name = payload.get("name")
    if not isinstance(name, str) or not name:
        return fail("The tool call has no \"name\".")
    if name not in tools:
        return fail(f"There is no tool named '{name}'. Available tools: {', '.join(tools) or 'none'}.")
    if "arguments" not in payload:
        return fail(f"The call to '{name}' has no \"arguments\".")
    arguments = payload["arguments"]
    if isinstance(arguments, str):  # some models double-encode; accept it only if it decodes to an object
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            pass
    if not isinstance(arguments, dict):
        return fail(f"The \"arguments\" of '{name}' must be a JSON object.")
    extra = set(payload) - {"name", "arguments"}
    if extra:
        return fail(f"Unexpected keys in the tool call: {', '.join(sorted(extra))}. Use only \"name\" and \"arguments\".")
    problem = validate_arguments(arguments, tools[name])
    if problem:
        return fail(f"Bad call to '{name}': {problem}.")
    turn.tool_call = ToolCall(name=name, arguments=arguments)
    return turn


def final_turn(rollout: str) -> str:
    """The last assistant turn of a flattened rollout (verl decodes prompt-free responses this way).

    Decoding without special tokens leaves the ChatML role names as plain lines
    (`...</tool_response>\nassistant\n<think>...`); the role line is not part of the turn.
    """
    tail = rollout.rsplit(RESP_CLOSE, 1)[-1] if RESP_CLOSE in rollout else rollout
    tail = tail.lstrip()
    return tail[len("assistant\n"):] if tail.startswith("assistant\n") else tail


def render_tool_call(call: ToolCall) -> str:
    body = json.dumps({"name": call.name, "arguments": call.arguments}, ensure_ascii=False)
    return f"{CALL_OPEN}\n{body}\n{CALL_CLOSE}"


def render_assistant(thought: str, tool_call: Optional[ToolCall] = None, answer: Optional[str] = None) -> str:
    """An assistant turn in the reference layout; exactly one of `tool_call` and `answer`."""
    if (tool_call is None) == (answer is None):
        raise ValueError("an assistant turn has exactly one of tool_call and answer")
    head = f"{THINK_OPEN}\n{thought.strip()}\n{THINK_CLOSE}\n"
    if tool_call is not None:
        return head + render_tool_call(tool_call)
    return head + f"{ANSWER_OPEN}\n{answer.strip()}\n{ANSWER_CLOSE}"


def format_error_observation(error: str) -> str:
    """What the model is told after a malformed turn (sampling, eval and both RL engines)."""
    return f"[format error] {error}"


def render_tool_response(text: str) -> str:
    return f"{RESP_OPEN}\n{text}\n{RESP_CLOSE}"


def unwrap_tool_response(text: str) -> Optional[str]:
    """The observation inside a `<tool_response>` user turn, or None if the turn is not one."""
    head, tail = RESP_OPEN + "\n", "\n" + RESP_CLOSE
    if text.startswith(head) and text.endswith(tail) and len(text) >= len(head) + len(tail):
        return text[len(head) : -len(tail)]  # the exact inverse of render_tool_response
    stripped = text.strip()
    if stripped.startswith(RESP_OPEN) and stripped.endswith(RESP_CLOSE):
        return stripped[len(RESP_OPEN) : -len(RESP_CLOSE)].strip("\n")
    return None


@functools.lru_cache(maxsize=32)
def _system_prompt(override: Optional[str]) -> PromptTemplate:
    return PromptTemplate.load(override, "webdancer.prompts", "system.txt", fields=(), optional=("date",))


@functools.lru_cache(maxsize=1)
def _user_prompt() -> PromptTemplate:
    return PromptTemplate.load(None, "webdancer.prompts", "user.txt", fields=("tools", "question"))


def render_tools_block(schemas: list[dict[str, Any]]) -> str:
    """The tool schemas as the user prompt lists them. Every trajectory of a run has the same tools, and
    indenting them is json's slow path: rendered once per distinct set (keyed by their compact JSON)."""
    return _tools_block(json_bytes(schemas))


@functools.lru_cache(maxsize=64)
def _tools_block(schemas_json: bytes) -> str:
    return ",\n".join(json.dumps(s, ensure_ascii=False, indent=2) for s in json.loads(schemas_json))


def initial_messages(
    question: str, tool_schemas: list[dict[str, Any]], date: str, system_prompt_file: Optional[str] = None
) -> list[Message]:
    """The system and first user turn every stage starts a trajectory with."""
    system = _system_prompt(system_prompt_file).fill(date=date).strip()
    user = _user_prompt().fill(tools=render_tools_block(tool_schemas), question=question.strip())
    return [Message("system", system), Message("user", user.strip())]
