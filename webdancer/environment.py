"""The browsing environment: one task, the configured tools, the agent's turn rules, as reset and step.

The agent loop (sampling, eval, the demo) steps an `Episode` with its policy's turns; the environment
adapters (`webdancer_env`: OpenEnv's server, TRL's `environment_factory`) step it with the turns of a
model they drive. One place holds the rules: a turn is parsed with `parse_assistant`; an answer ends the
episode; a valid call runs the tool; a malformed turn gets the `[format error]` observation; a tool
backend that is down ends it as an outage (never an observation); `agent.max_turns` turns end it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Optional

from webdancer.config import AgentConfig
from webdancer.errors import OutageError
from webdancer.records import Message, QAItem, Sampled, Step, ToolResult, Trajectory, TurnTokens, Usage, stable_id
from webdancer.tools import ToolBox
from webdancer.wire import format_error_observation, initial_messages, parse_assistant, render_tool_response


@dataclass
class Transition:
    """What one model turn did: the parsed step (with its tool result), the observation to show next, and
    whether the episode ended (`Trajectory.termination` says why)."""

    step: Step
    observation: Optional[str]
    done: bool


class Episode:
    """One task in the environment. `trajectory` holds the conversation so far (system prompt with the tools,
    the question, every turn and observation); `step(text)` plays one model turn."""

    def __init__(self, toolbox: ToolBox, config: AgentConfig, question: str, task: Optional[QAItem] = None,
                 sample_index: int = 0, policy: str = "", model: str = ""):
        self.toolbox, self.config = toolbox, config
        schemas = toolbox.schemas()
        self._tool_params = {s["name"]: s["parameters"] for s in schemas}
        qid = task.id if task else stable_id(question)
        self.trajectory = Trajectory(
            id=f"{qid}:{sample_index}",
            question=question,
            messages=initial_messages(question, schemas, config.current_date or dt.date.today().isoformat(), config.system_prompt_file),
            question_id=qid,
            sample_index=sample_index,
            reference_answer=task.answer if task else None,
            policy=policy,
            model=model,
            tools=schemas,
            provenance={"tag": task.tag} if task and task.tag else {},
            started_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            termination="max_turns",
        )
        self.done = False
        self._sequence: Optional[list[int]] = None  # the last turn's prompt + completion ids, when reported

    def _turn_tokens(self, sampled: Optional[Sampled]) -> Optional[TurnTokens]:
        """`sampled` kept once: the prompt's ids after those it shares with the previous turn's prompt + completion."""
        if sampled is None:
            self._sequence = None
            return None
        previous = self._sequence or []
        reused = 0
        for a, b in zip(previous, sampled.prompt_ids):
            if a != b:
                break
            reused += 1
        self._sequence = sampled.prompt_ids + sampled.completion_ids
        return TurnTokens(reused, sampled.prompt_ids[reused:], sampled.completion_ids, sampled.logprobs)

    def end(self, termination: str, error: Optional[str] = None) -> None:
        """End the episode without a turn (the model or the context gave out)."""
        self.trajectory.termination, self.trajectory.error, self.done = termination, error, True

    async def step(self, text: str, latency_s: float = 0.0, usage: Optional[Usage] = None, sampled: Optional[Sampled] = None) -> Transition:
        if self.done:
            raise RuntimeError(f"episode {self.trajectory.id} has ended ({self.trajectory.termination}): reset for another")
        traj = self.trajectory
        parsed = parse_assistant(text, self._tool_params)
        usage = usage or Usage()
        step = Step(index=len(traj.steps), raw_output=text, thought=parsed.thought, tool_call=parsed.tool_call, answer=parsed.answer,
                    parse_error=parsed.error, wrote_tool_response=parsed.wrote_tool_response, model_latency_s=latency_s,
                    usage=Usage(usage.prompt_tokens, usage.completion_tokens), tokens=self._turn_tokens(sampled))
        traj.steps.append(step)
        traj.usage.add(usage)
        traj.messages.append(Message("assistant", parsed.text))
        if parsed.answer is not None:
            traj.answer = parsed.answer
            self.end("answered")
            return Transition(step, None, True)
        if parsed.error is not None:
            result = ToolResult(name="", content=format_error_observation(parsed.error), error=True)
        else:
            try:
                result = await self.toolbox.run(parsed.tool_call)
            except OutageError as exc:  # the call is not answered: the step stays without an observation
                self.end("outage", str(exc))
                return Transition(step, None, True)
        step.tool_result = result
        observation = render_tool_response(result.content)
        traj.messages.append(Message("user", observation))
        if len(traj.steps) >= self.config.max_turns:
            self.end("max_turns")
        return Transition(step, observation, self.done)
