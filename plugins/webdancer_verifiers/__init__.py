"""Our browsing environment as a verifiers environment (verifiers 0.4, `verifiers.v1`), for `vf-eval` and the
trainers that load verifiers environments (prime-rl):

    vf-eval webdancer-verifiers --env.taskset.qa data/qa.jsonl -m MODEL --client.base-url http://127.0.0.1:8000/v1

It runs in `.venvs/verifiers` (`scripts/setup_verifiers.sh`: verifiers pins mcp 2, `.venv` holds mcp 1). The
environment plays the user, as verifiers' own OpenEnv taskset does: it opens the conversation with our system
prompt (the tools) and the question, and answers each model turn with `webdancer.environment.Episode`'s
observation, so the turn rules are our agent's (wire-format tool calls, `[format error]` for a malformed turn,
`agent.max_turns`). When the episode ends, each configured reward is recorded on the trace with its weight, so the
trace's reward is the reward set's score. An outage (a tool backend or the judge down) fails the episode instead:
never a result, and `vf-eval @ RUN_DIR/configs/resolved/eval.json --resume` runs it again. The model sees the conversation verifiers keeps, whole:
`agent.context` policies apply in our own agent loop only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Optional

import verifiers.v1 as vf
from verifiers.v1.harnesses.null import NullHarnessConfig
from verifiers.v1.runtimes import SubprocessConfig
from webdancer_env.shared import SharedEnvironment

from webdancer.config_loader import load_config
from webdancer.datasources import read_qa
from webdancer.environment import Episode
from webdancer.errors import OutageError
from webdancer.records import QAItem
from webdancer.rewards import reward_input


class WebTasksetConfig(vf.TasksetConfig):
    qa: str = ""
    """The questions (required): any source `webdancer sample` reads (QA JSONL, a dataset folder)."""
    config: Optional[str] = None
    """A webdancer YAML config (tools, rewards, agent.max_turns); none: the defaults, the offline web."""
    overrides: list[str] = []
    """Config overrides, `key=value` as on webdancer's command line."""


class WebTaskData(vf.TaskData):
    question: str
    answer: str
    tag: str = ""


class WebTask(vf.Task[WebTaskData]):
    pass


class WebTaskset(vf.Taskset[WebTask, WebTasksetConfig]):
    def load(self) -> Iterator[WebTask]:
        if not self.config.qa:
            raise ValueError("webdancer-verifiers needs its questions: --env.taskset.qa FILE (QA JSONL or a dataset folder)")
        for item in read_qa(self.config.qa):
            # No prompt: the environment opens the conversation (system prompt with the tools, then the question).
            yield WebTask(WebTaskData(id=item.id, name=item.id, prompt=None, question=item.question, answer=item.answer,
                                      tag=item.tag), self.config.task)


class WebEnvConfig(vf.EnvConfig):
    # The model's replies go to the environment as they are: verifiers' plain chat program (no tools of its own, our
    # tools are in the system prompt) run as a local process.
    agent: vf.AgentConfig = vf.AgentConfig(harness=NullHarnessConfig(id="null"), runtime=SubprocessConfig())


class WebEnv(vf.Env[WebEnvConfig]):
    shared: Optional[SharedEnvironment] = None

    async def start(self) -> None:
        taskset = self.taskset.config
        self.shared = SharedEnvironment(load_config(taskset.config, taskset.overrides), [])

    async def stop(self) -> None:
        if self.shared is not None:
            await self.shared.aclose()

    async def run(self, task: WebTask, agents: vf.Agents) -> None:
        assert self.shared is not None, "the environment serves episodes between start() and stop()"
        data = task.data
        item = QAItem(question=data.question, answer=data.answer, id=data.id or "", tag=data.tag)
        episode = Episode(await self.shared.toolbox(), self.shared.cfg.agent, item.question, item, policy="verifiers")
        opening = [{"role": m.role, "content": m.content} for m in episode.trajectory.messages]
        async with agents.agent.interaction(task) as interaction:
            segment = await interaction.turn(opening)
            while not segment.terminated:
                moved = await episode.step(segment.last_reply)
                if moved.done:
                    break
                segment = await interaction.turn(moved.observation)
            trace = interaction.trace
            if not episode.done:  # verifiers ended the exchange: its own turn limit, or the model call failed
                episode.end("max_turns")
                if not trace.ok:
                    return  # the trace carries verifiers' error; nothing is scored
            traj = episode.trajectory
            if traj.termination == "outage":
                raise OutageError(traj.error or "a tool backend was down")
            scored = await self.shared.rewards.score(reward_input(traj))  # a judge outage raises: no reward
            for name, weight in self.shared.rewards.weights.items():
                trace.record_reward(name, scored.parts[name], weight)
            trace.record_metric("correct", float(scored.correct))
            trace.record_metric("tool_calls", float(sum(1 for s in traj.steps if s.tool_call is not None)))
            trace.info["webdancer"] = {"termination": traj.termination, "answer": traj.answer, "question_id": traj.question_id}


__all__ = ["WebEnv", "WebEnvConfig", "WebTask", "WebTaskData", "WebTaskset", "WebTasksetConfig"]
