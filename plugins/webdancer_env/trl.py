"""Our browsing environment for plain TRL: `trl.GRPOTrainer(..., environment_factory=...)`, no webdancer engine.

    env = TRLEnvironment.from_config("configs/quickstart.yaml")
    tokenizer = env.tokenizer(path)
    trainer = GRPOTrainer(model=path, processing_class=tokenizer, train_dataset=env.dataset("qa.jsonl"),
                          reward_funcs=env.reward_funcs(tokenizer), environment_factory=env.environment_factory,
                          args=GRPOConfig(..., max_tool_calling_iterations=env.max_tool_calling_iterations))

What TRL sees is what our engines see: the prompts are the agent's first messages (system prompt, the tools
block, the question), each configured tool is a method of the environment (its JSON schema becomes the
method's signature and docstring), an observation is the tool's text, which our chat template renders as the
`<tool_response>` turn, and the rewards are the configured reward set scored on the decoded rollout exactly as
verl's `compute_score` scores it. A call with arguments that do not fit the tool's schema gets our
`[format error]` observation. A tool backend that is down is an outage, never a result: the rollout's reward
raises it, so the step stops before an update (rerun to resume).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, Optional

from webdancer.config import WebdancerConfig
from webdancer.errors import ConfigError, OutageError
from webdancer.records import QAItem, ToolCall
from webdancer.rewards import RewardInput, RewardScore, RewardSet
from webdancer.wire import final_turn, format_error_observation, parse_assistant, validate_arguments
from webdancer_env.shared import SharedEnvironment

# How TRL reads a tool call out of a generated turn (transformers' response parsing): our wire format, Hermes-style
# <tool_call>{"name", "arguments"}</tool_call>; everything else (the thought, an <answer>) stays the turn's text.
RESPONSE_TEMPLATE = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "content": {"close_pattern": r"(?=<tool_call>)|<\|im_end\|>\s*", "content": "text"},
        "tool_calls": {"open": "<tool_call>", "close_pattern": r"</tool_call>\s*", "repeats": True, "content": "json",
                       "transform": {"type": "function", "function": "{content}"}},
    },
}

_PYTHON_TYPES = {"string": str, "number": float, "integer": int, "boolean": bool, "object": dict}


def _python_type(spec: dict[str, Any]) -> Any:
    """The annotation transformers' `get_json_schema` turns back into this JSON schema type."""
    if spec.get("type") == "array":
        return list[_python_type(spec.get("items") or {"type": "string"})]
    return _PYTHON_TYPES.get(spec.get("type", "string"), str)


def _tool_method(schema: dict[str, Any]) -> Callable[..., Any]:
    """A method named after the tool whose signature and Google-style docstring say its JSON schema (what TRL
    renders into the chat template), and which runs the call through the shared toolbox."""
    name, params = schema["name"], schema.get("parameters") or {}
    properties, required = params.get("properties") or {}, set(params.get("required") or [])

    async def call(self, **arguments: Any) -> str:
        return await self._call(name, params, arguments)

    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    annotations: dict[str, Any] = {"return": str}
    for key, spec in properties.items():
        annotations[key] = _python_type(spec)
        default = inspect.Parameter.empty if key in required else None
        parameters.append(inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotations[key]))
    call.__name__ = call.__qualname__ = name
    call.__signature__ = inspect.Signature(parameters, return_annotation=str)  # type: ignore[attr-defined]
    call.__annotations__ = annotations
    args = "".join(f"\n    {key}: {(spec.get('description') or key).strip()}" for key, spec in properties.items())
    call.__doc__ = f"{schema.get('description', name).strip()}\n\nArgs:{args}\n\nReturns:\n    The tool's observation text."
    return call


class TRLEnvironment:
    """The configured environment for TRL: `environment_factory` (one instance per rollout, all sharing one
    toolbox), the dataset, the reward functions, the tokenizer with our response parsing, the turn limit."""

    def __init__(self, cfg: WebdancerConfig):
        from webdancer_rl.prepare import offered_tools

        self.cfg = cfg
        self.schemas = [schema for _, schema in offered_tools(cfg)]
        self.shared = SharedEnvironment(cfg, [])  # one toolbox (opened on TRL's loop at the first call), the reward set
        self._scored: dict[tuple[tuple[int, ...], str, str], RewardScore] = {}  # the latest batch's scores, per rollout
        methods = {schema["name"]: _tool_method(schema) for schema in self.schemas}
        taken = sorted(set(methods) & {"reset", "get_reward"} | {n for n in methods if n.startswith("_")})
        if taken:
            raise ConfigError(f"agent.tools: TRL's environment cannot offer a tool named {taken[0]!r} (a name TRL reserves or hides)")
        self.environment_class = type("WebdancerEnvironment", (_Environment,), methods)

    @classmethod
    def from_config(cls, path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> "TRLEnvironment":
        from webdancer.config_loader import load_config

        return cls(load_config(path, overrides))

    @property
    def max_tool_calling_iterations(self) -> int:
        """`agent.max_turns` model turns: the first turn, then one per round of tool calls."""
        return max(0, self.cfg.agent.max_turns - 1)

    def environment_factory(self) -> "_Environment":
        return self.environment_class(self)

    def dataset(self, source: str | Path | list[QAItem]):
        """A `datasets.Dataset` of the questions: `prompt` (the agent's first messages), `question`, `answer`, `id`."""
        import datasets
        from webdancer_rl.prepare import rl_row

        from webdancer.datasources import read_qa

        items = source if isinstance(source, list) else read_qa(source)
        if not items:
            raise ConfigError(f"{source}: no questions to train on")
        rows = [rl_row(item, i, self.schemas, self.cfg, "train") for i, item in enumerate(items)]
        return datasets.Dataset.from_list([{"prompt": row["prompt"], "question": item.question, "answer": item.answer, "id": item.id}
                                           for row, item in zip(rows, items)])

    def tokenizer(self, model: str | Path):
        """The model's tokenizer, told how to read our tool calls (TRL needs that to call the environment's tools)."""
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model)
        tokenizer.response_template = RESPONSE_TEMPLATE
        tokenizer.padding_side = "left"
        return tokenizer

    def reward_funcs(self, tokenizer: Any) -> list[Callable[..., Any]]:
        """One reward function per configured reward, each already weighted (TRL sums them with weight 1 and logs
        each under `rewards/<name>`): their sum is the score our engines give the same rollout, decoded with
        `tokenizer` (the trainer's) as verl decodes it."""
        rewards = self.reward_set()
        return [self._reward_func(name, weight, tokenizer) for name, weight in rewards.weights.items()]

    def reward_set(self) -> RewardSet:
        return self.shared.rewards

    def _reward_func(self, name: str, weight: float, tokenizer: Any) -> Callable[..., Any]:
        async def reward(prompts, completions, completion_ids, question, answer, environments=None, **_):
            for environment in environments or []:
                if environment._outage:
                    raise OutageError(environment._outage)  # an outage is never a reward: the step stops here
            return [weight * scored.parts[name] for scored in await self._scores(completion_ids, question, answer, tokenizer)]

        reward.__name__ = name
        return reward

    async def _scores(self, completion_ids: list[list[int]], question: list[str], answer: list[str], tokenizer: Any) -> list[RewardScore]:
        """The reward set's score of each rollout of a batch, computed once for all the reward functions TRL calls on
        it (each takes its own part; a judge is asked once per rollout, not once per reward)."""
        keys = [(tuple(ids), q, reference) for ids, q, reference in zip(completion_ids, question, answer)]
        batch = set(keys)
        self._scored = {key: scored for key, scored in self._scored.items() if key in batch}
        for key in keys:
            if key not in self._scored:
                text = tokenizer.decode(list(key[0]), skip_special_tokens=True)  # what verl's compute_score is given
                parsed = parse_assistant(final_turn(text), {})
                self._scored[key] = await self.reward_set().score(RewardInput(question=key[1], response=text, reference=key[2],
                                                                              answer=parsed.answer))
        return [self._scored[key] for key in keys]

    async def _call(self, name: str, params: dict[str, Any], arguments: dict[str, Any], environment: "_Environment") -> str:
        problem = validate_arguments(arguments, params)
        if problem is not None:
            return format_error_observation(f"Bad call to '{name}': {problem}.")
        toolbox = await self.shared.toolbox()
        try:
            return (await toolbox.run(ToolCall(name, arguments))).content
        except OutageError as exc:
            environment._outage = str(exc)
            raise


class _Environment:
    """One rollout's environment (TRL pools and resets them); the tool methods are added per configuration."""

    def __init__(self, owner: TRLEnvironment):
        self._owner = owner
        self._outage: Optional[str] = None

    def reset(self, **row: Any) -> None:
        """A new rollout: the prompt already holds the question and the tools, so nothing is appended to it."""
        self._outage = None
        return None

    async def _call(self, name: str, params: dict[str, Any], arguments: dict[str, Any]) -> str:
        return await self._owner._call(name, params, arguments, self)
