"""The browsing environment as an OpenEnv server (`webdancer env serve`): reset/step/state over HTTP and WebSocket,
with OpenEnv's own server (`openenv-core`), so OpenEnv's clients and the trainers that consume them drive it.

An action is one model turn in the wire format (`<think>…</think>` then `<tool_call>{…}</tool_call>` or
`<answer>…</answer>`), played by `webdancer.environment.Episode` exactly as our agent plays it: a malformed turn
gets the `[format error]` observation, `agent.max_turns` turns end the episode. `reset` opens a task: a given
`question` (and `answer`), or one of the served QA file's by `index` or `seed`, or the next in turn. The
episode's reward, when it ends, is the configured reward set's score; an outage of a tool backend ends the
episode without one (`metadata.outage`): an outage is never a reward. Each WebSocket session has an environment of
its own; sessions share one toolbox (its caches, the tool store) and one reward set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from openenv.core.env_server import Action, ConcurrencyConfig, Environment, Observation, State, create_fastapi_app
from pydantic import Field

from webdancer.config import WebdancerConfig
from webdancer.environment import Episode
from webdancer.errors import ConfigError, OutageError
from webdancer.rewards import reward_input
from webdancer_env.shared import SharedEnvironment


class WebAction(Action):
    # The one required field: a client that sends the model's raw reply as the action (verifiers' OpenEnv taskset) works.
    text: str = Field(description="The model's turn: <think>…</think> then one <tool_call>{…}</tool_call> or <answer>…</answer>")


class WebObservation(Observation):
    messages: list[dict[str, str]] = Field(default_factory=list, description="Messages to append to the conversation: "
                                           "the system prompt and the question after reset, the tool response after a step")
    termination: Optional[str] = Field(default=None, description="Why the episode ended: answered, max_turns, outage")
    answer: Optional[str] = None
    reward_parts: dict[str, float] = Field(default_factory=dict, description="Each configured reward's value, when it ended")


class WebState(State):
    question_id: str = ""
    question: str = ""
    termination: Optional[str] = None


class WebEnvironment(Environment[WebAction, WebObservation, WebState]):
    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(self, shared: SharedEnvironment):
        super().__init__()
        self.shared = shared
        self.episode: Optional[Episode] = None
        self.episode_id: Optional[str] = None

    async def reset_async(self, seed: Optional[int] = None, episode_id: Optional[str] = None, question: Optional[str] = None,
                          answer: Optional[str] = None, index: Optional[int] = None, **_: Any) -> WebObservation:
        task = self.shared.task(question, answer, index, seed)
        toolbox = await self.shared.toolbox()
        self.episode = Episode(toolbox, self.shared.cfg.agent, task.question, task, policy="openenv")
        self.episode.trajectory.reference_answer = task.answer or None  # a question asked without its answer scores 0
        self.episode_id = episode_id or self.episode.trajectory.id
        messages = [{"role": m.role, "content": m.content} for m in self.episode.trajectory.messages]
        return WebObservation(messages=messages, metadata={"question_id": self.episode.trajectory.question_id})

    async def step_async(self, action: WebAction, timeout_s: Optional[float] = None, **_: Any) -> WebObservation:
        if self.episode is None:
            raise ValueError("reset first: no episode is open in this session")
        if self.episode.done:
            raise ValueError(f"the episode has ended ({self.episode.trajectory.termination}): reset for another")
        moved = await self.episode.step(action.text)
        traj = self.episode.trajectory
        messages = [{"role": "user", "content": moved.observation}] if moved.observation is not None else []
        if not moved.done:
            return WebObservation(messages=messages)
        if traj.termination == "outage":
            return WebObservation(messages=messages, done=True, termination="outage", metadata={"outage": traj.error})
        try:
            scored = await self.shared.rewards.score(reward_input(traj))
        except OutageError as exc:  # the judge is down: no reward rather than a wrong one
            return WebObservation(messages=messages, done=True, termination=traj.termination, answer=traj.answer, metadata={"outage": str(exc)})
        return WebObservation(messages=messages, done=True, reward=scored.score, termination=traj.termination, answer=traj.answer,
                              reward_parts=scored.parts, metadata={"correct": scored.correct})

    def reset(self, seed: Optional[int] = None, episode_id: Optional[str] = None, **kwargs: Any) -> WebObservation:
        raise NotImplementedError("the server calls reset_async")

    def step(self, action: WebAction, timeout_s: Optional[float] = None, **kwargs: Any) -> WebObservation:
        raise NotImplementedError("the server calls step_async")

    @property
    def state(self) -> WebState:
        if self.episode is None:
            return WebState()
        traj = self.episode.trajectory
        return WebState(episode_id=self.episode_id, step_count=len(traj.steps), question_id=traj.question_id, question=traj.question,
                        termination=traj.termination if self.episode.done else None)


def build_app(cfg: WebdancerConfig, qa: Optional[str | Path] = None, max_sessions: int = 64, idle_timeout_s: float = 600.0):
    """OpenEnv's FastAPI app for our environment; tasks from `qa` (any source `webdancer sample` reads)."""
    from webdancer.datasources import read_qa

    tasks = read_qa(qa) if qa is not None else []
    if qa is not None and not tasks:
        raise ConfigError(f"{qa}: no questions")
    shared = SharedEnvironment(cfg, tasks)
    config = ConcurrencyConfig(max_concurrent_envs=max_sessions, session_timeout=idle_timeout_s)
    app = create_fastapi_app(lambda: WebEnvironment(shared), WebAction, WebObservation, concurrency_config=config)
    app.state.webdancer = shared
    return app
