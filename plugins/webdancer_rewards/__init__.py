"""Rewards `format` and `answer`: the paper's format score and answer score (exact/F1 fallback)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from webdancer import hookimpl
from webdancer.errors import ConfigError
from webdancer.prompt_template import PromptTemplate
from webdancer.rewards import Reward, RewardInput
from webdancer.scoring import exact_match, matches, token_f1
from webdancer.wire import final_turn, parse_assistant


class FormatReward(Reward):
    """1.0 when the response ends in exactly one well-formed <answer> and every turn parses."""

    name = "format"

    async def score(self, sample: RewardInput) -> float:
        if sample.trajectory is not None:
            steps = sample.trajectory.steps
            ok = bool(steps) and all(s.parse_error is None and not s.wrote_tool_response for s in steps)
            return float(ok and steps[-1].answer is not None)
        parsed = parse_assistant(final_turn(sample.response), {})
        return float(parsed.answer is not None and parsed.error is None)


@dataclass
class AnswerRewardConfig:
    # match: the no-judge rule the filter and eval use (exact, containment in a short answer, or
    # token F1 >= f1_threshold); exact: normalized exact match only; f1: token F1 itself (graded).
    metric: Literal["match", "exact", "f1"] = "match"
    f1_threshold: float = 0.8


class AnswerReward(Reward):
    """Answer correctness without a judge model; the LLM judge is a separate reward plugin."""

    name = "answer"
    Config = AnswerRewardConfig

    async def score(self, sample: RewardInput) -> float:
        answer = sample.answer
        if answer is None:
            answer = parse_assistant(final_turn(sample.response), {}).answer
        if not answer:
            return 0.0
        if self.config.metric == "f1":
            return token_f1(answer, sample.reference)
        if self.config.metric == "exact":
            return float(exact_match(answer, sample.reference))
        return float(matches(answer, sample.reference, self.config.f1_threshold))


@dataclass
class JudgeRewardConfig:
    """Filled from the config's `judge` section (configured once, for the filter, eval and RL)."""

    # An OpenAI-compatible model (ModelConfig fields); the prompt is the WebWalker-style correct/incorrect judge.
    model: dict = field(default_factory=dict)
    # Empty: the packaged prompt (webdancer_rewards/prompts/judge.txt), so verl workers find it from any cwd.
    prompt_file: str = ""


class JudgeReward(Reward):
    """LLM-as-judge correctness: 1.0 when the judge says Correct. Without a model it is an error, not a guess."""

    name = "judge"
    Config = JudgeRewardConfig

    def __init__(self, config: JudgeRewardConfig | None = None):
        super().__init__(config)
        from webdancer.config import ModelConfig
        from webdancer.llm import ChatClient
        from webdancer.options import validate_options

        if not self.config.model:
            raise ConfigError("the judge reward needs a model: set judge.model: {base_url, model, api_key_env}")
        model = validate_options(ModelConfig, self.config.model, "judge.model")
        model.stop, model.temperature, model.max_tokens = [], 0.0, 8
        self.client = ChatClient(model)
        self.template = PromptTemplate.load(self.config.prompt_file, "webdancer_rewards", "prompts/judge.txt", ("question", "reference", "answer"))

    async def score(self, sample: RewardInput) -> float:
        from webdancer.records import Message

        answer = sample.answer if sample.answer is not None else parse_assistant(final_turn(sample.response), {}).answer
        if not answer:
            return 0.0
        prompt = self.template.fill(question=sample.question, reference=sample.reference, answer=answer)
        reply = await self.client.chat([Message("user", prompt)])
        verdict = reply.text.strip().lower()
        return 1.0 if verdict.startswith("correct") else 0.0

    def describe(self) -> dict:
        """The judge model (not its key) and which prompt it was given, by source and hash."""
        from webdancer.rewards import prompt_hash

        model = self.config.model
        return {"model": model.get("model", "?"), "base_url": model.get("base_url", ""),
                "prompt": self.template.source, "prompt_sha256": prompt_hash(self.template.text)}

    async def aclose(self) -> None:
        await self.client.aclose()


@hookimpl
def register_rewards(register):
    register(FormatReward)
    register(AnswerReward)
    register(JudgeReward)
