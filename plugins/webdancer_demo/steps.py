"""Agent steps as gradio chat messages (plain dicts, so this module needs no gradio to test).

Thoughts and tool calls are shown open; observations sit in a collapsed accordion, because they
are long and a person reads them only when checking the agent's work. No emoji: the headless
browsers and servers people run this on often lack the font.
"""

from __future__ import annotations

import json
from typing import Any

from webdancer.records import Step, Trajectory

Chat = list[dict[str, Any]]
OBSERVATION_CHARS = 4000


def _msg(content: str, title: str | None = None, status: str | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": content}
    if title:
        msg["metadata"] = {"title": title, **({"status": status} if status else {})}
    return msg


def pending(index: int) -> dict[str, Any]:
    return _msg("", title=f"Step {index + 1} · waiting for the model", status="pending")


def step_messages(step: Step) -> Chat:
    """The step's thought and call in the open, its observation collapsed, then the answer if any."""
    n = step.index + 1
    parts = [f"**Step {n}**"]
    if step.thought:
        parts.append(step.thought)
    if step.tool_call is not None:
        args = json.dumps(step.tool_call.arguments, ensure_ascii=False, indent=1)
        parts.append(f"Calls `{step.tool_call.name}`:\n```json\n{args}\n```")
    if step.parse_error:
        parts.append(f"⚠ The model's output did not follow the format: {step.parse_error}")
    out: Chat = [_msg("\n\n".join(parts))]
    if step.tool_result is not None and step.tool_call is not None:
        text = step.tool_result.content
        if len(text) > OBSERVATION_CHARS:
            text = text[:OBSERVATION_CHARS] + f"\n\n… [{len(step.tool_result.content) - OBSERVATION_CHARS} more characters]"
        label = "tool error" if step.tool_result.error else "observation"
        out.append(_msg(text, title=f"Step {n} · {label} ({len(step.tool_result.content)} chars)", status="done"))
    if step.answer is not None:
        out.append(_msg(f"**Answer:** {step.answer}"))
    return out


def closing_message(traj: Trajectory) -> dict[str, Any]:
    """What a person needs when the run ends: why it ended, and errors as words, not tracebacks."""
    facts = f"{len(traj.steps)} turns, {traj.elapsed_s:.1f} s, termination: {traj.termination}"
    if traj.termination == "answered":
        return _msg(f"_Done: {facts}._")
    reasons = {
        "max_turns": "No answer within the turn limit (agent.max_turns).",
        "context_overflow": "The conversation no longer fits the model's context (agent.max_context_tokens).",
        "model_error": "The model endpoint failed.",
        "policy_error": "The policy failed.",
        "outage": "The model endpoint or a tool backend is down (it did not answer after its retries); try again later.",
    }
    detail = f"\n\n`{traj.error}`" if traj.error else ""
    return _msg(f"⚠ {reasons.get(traj.termination, 'The run stopped.')} _({facts})_{detail}")


def error_message(text: str) -> dict[str, Any]:
    return _msg(f"⚠ {text}")
