"""The typed config: every section a dataclass (loaded by webdancer.config_loader)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from webdancer.leaks import BENCHMARK_SOURCES

# The paper's reward (format score + answer score): filtering, evaluation and both RL engines score with it
# unless `rewards` says otherwise; with a judge configured, the judge scores the answer.
DEFAULT_REWARD_WEIGHTS = {"format": 0.1, "answer": 0.9}
JUDGED_REWARD_WEIGHTS = {"format": 0.1, "judge": 0.9}


def one_of(*choices: str) -> Any:
    """A string field that takes one of `choices` (the first is the default), checked on load.

    omegaconf cannot hold `Literal` fields; plugin options (built by `webdancer.typed`) use `Literal`."""
    return field(default=choices[0], metadata={"choices": choices})


@dataclass
class RunConfig:
    """Where a run's files go: `root/name/` (runs/<name>/)."""

    name: str = "default"
    root: str = "runs"

    @property
    def dir(self) -> Path:
        return Path(self.root) / self.name


@dataclass
class ModelConfig:
    """An OpenAI-compatible chat endpoint; the key is read from the env var named here, never stored."""

    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "webdancer-tiny"  # the `model` value sent (batched and transformers serve: the folder they serve)
    api_key_env: Optional[str] = None  # the environment variable holding the key (none for local servers)
    timeout_s: float = 120.0
    max_retries: int = 4  # on 408/409/425/429/5xx and connection errors, with jittered backoff
    backoff_s: float = 0.5
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 1024  # per model turn
    stop: list[str] = field(default_factory=lambda: ["<tool_response>"])  # a model writing its own observation stops there
    extra_body: dict[str, Any] = field(default_factory=dict)  # sent as is (e.g. chat_template_kwargs)
    # Ask for each turn's prompt and completion token ids (vLLM's `return_token_ids`, which the batched server
    # honours too; log-probs as well when extra_body asks for `logprobs`): trajectories keep them, and `webdancer traj
    # check` compares them with what the chat template renders. Hosted APIs refuse the field: leave it off there.
    return_token_ids: bool = False


@dataclass
class AgentConfig:
    """The ReAct loop: who writes the turns, the tools offered, turns, context budget, concurrency."""

    # The policy that writes the agent's turns (`webdancer plugins`): openai (any OpenAI-compatible model),
    # expert (the scripted teacher of the embedded web) or yours; its options live under `policies.<name>`.
    policy: str = "openai"
    # The tools offered to the model, in this order; their options live under `tools.<name>`.
    tools: list[str] = field(default_factory=lambda: ["search", "visit"])
    max_turns: int = 20
    max_context_tokens: int = 32768  # the prompt's budget: the context policy keeps each prompt within it
    # What each prompt keeps of the conversation (`webdancer plugins`): blank_old (the oldest observations are blanked
    # until it fits), keep_last_k (only the last k tool results), summarize (restart from a model-written summary past
    # a threshold), or yours; its options live under `context.<name>`.
    context: str = "blank_old"
    tool_timeout_s: float = 60.0
    concurrency: int = 8  # trajectories in flight (sampling, eval)
    system_prompt_file: Optional[str] = None  # your own system prompt (placeholder {date}); empty: the packaged one
    current_date: Optional[str] = None  # the date the prompt states (empty: today); fix it for reproducible runs


@dataclass
class SampleConfig:
    """`webdancer sample`: rollouts per question."""

    n: int = 1  # rollouts per question (rejection sampling)


@dataclass
class FilterConfig:
    """The three-stage trajectory filter: validity, correctness, quality."""

    max_turns: int = 20  # validity: more turns than this is a loop
    max_chars: int = 200_000  # validity: a longer trajectory is dropped
    max_thought_chars: int = 6000  # quality: a longer thought is rambling
    # correctness is the configured `rewards` (the judge's when `judge.model` is set): see `webdancer.rewards.RewardSet`.
    # The shortest correct trajectories kept per question (0 = all that pass).
    keep_per_question: int = 1


@dataclass
class EvalConfig:
    """`webdancer eval`: k runs per question, scored by the configured `rewards` (the judge's when `judge.model` is set)."""

    k: int = 1  # runs per question (Pass@1 is their mean, Pass@k the unbiased estimate)
    # GAIA questions with an attached file: skip them (the text-only subset the WebDancer paper
    # reports), or ask them anyway (the agent cannot open the file; it must find the answer on the web).
    attachments: str = one_of("skip", "ask")
    # Leak blocking: URL patterns (domains, globs, re:<regex>; webdancer.leaks) that `search` drops and `visit`
    # refuses while evaluating, added to every offered tool with a `blocklist` option. Default: the benchmarks'
    # own releases and known copies; [] turns it off.
    blocklist: list[str] = field(default_factory=lambda: list(BENCHMARK_SOURCES))


@dataclass
class JudgeConfig:
    """The LLM judge, configured once: the `judge` reward uses it wherever it scores (filter, eval, RL)."""

    # An OpenAI-compatible model (ModelConfig fields: base_url, model, api_key_env, ...); empty: no judge, and
    # answers are matched by the `answer` reward (normalized exact match, containment, token F1).
    model: dict[str, Any] = field(default_factory=dict)
    prompt_file: str = ""  # empty: the judge reward's packaged WebWalker-style prompt
    concurrency: int = 8  # judge calls in flight while filtering and evaluating


@dataclass
class TrackingConfig:
    """Experiment tracking, one setting for every stage: a dashboard shows a whole pipeline as one run."""

    # trackio: local, no account (`trackio show`); wandb, swanlab, tensorboard, mlflow: by name (their package
    # installed, keys from the environment); none: off. SFT and RL report through their trainers' own integrations;
    # sample, filter, eval and the pipeline log their counts and scores (to trackio; other backends get SFT and RL).
    backend: str = one_of("trackio", "wandb", "swanlab", "tensorboard", "mlflow", "none")
    project: str = "webdancer"  # the run is `run.name`
    dir: str = ""  # where local backends write (trackio's database, tensorboard's events, mlflow's files); default <run.root>/tracking


@dataclass
class ToolStoreConfig:
    """Record and replay tool calls (webdancer.toolstore): one store for sampling, eval and RL."""

    # off: call the tools; live: call and record; cached: recorded calls are served, the rest called and recorded;
    # replay: never call (a call not recorded is an error observation naming it).
    mode: str = one_of("off", "live", "cached", "replay")
    dir: str = ".webdancer/tool_store"  # calls.jsonl + tools.json: copy the folder to replay elsewhere
    prices: dict[str, float] = field(default_factory=dict)  # estimated cost of one live call, by tool name (reports)


@dataclass
class InfraConfig:
    """Endpoints that keep failing: every rollout using one pauses (a circuit breaker per endpoint)."""

    breaker_failures: int = 5  # consecutive failed attempts (connection errors, timeouts, 429/5xx) that pause it
    max_outage_s: float = 600.0  # down this long: the rollouts end as outages and the run stops; a rerun continues
    probe_min_s: float = 1.0  # first wait before probing a paused endpoint; doubles up to probe_max_s
    probe_max_s: float = 30.0


@dataclass
class WebdancerConfig:
    """The core's sections. A loaded config also holds every installed plugin's own sections (serve, web, sft,
    rl, pipeline, demo ...: `register_config_sections`), typed by the plugin's dataclass: see `config_schema`."""

    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    # Every component kind is configured the same way: `<kind>.<name>` holds one component's own options
    # (`webdancer plugins` lists them), for any registered name, selected or not. What selects: agent.policy,
    # agent.tools, a reward's `weight`, the synthesizer named on the command line.
    # Policy name -> its options.
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Tool name -> its options.
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Reward name -> {weight, its options}: the rewards with a `weight` are how the filter, eval and RL all score.
    # None weighted: the paper's format 0.1 + answer 0.9 (judge 0.9 instead of answer when `judge.model` is set).
    # A sample is correct at half the weights' sum. The judge's options are the `judge` section.
    rewards: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Synthesizer name -> its options (see `webdancer synth NAME --help`).
    synth: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Context policy name -> its options (agent.context selects one).
    context: dict[str, dict[str, Any]] = field(default_factory=dict)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    infra: InfraConfig = field(default_factory=InfraConfig)
    tool_store: ToolStoreConfig = field(default_factory=ToolStoreConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __getattr__(self, name: str) -> Any:
        # Only reached for a missing attribute: a plugin's section when that plugin is not installed.
        if name.startswith("_"):
            raise AttributeError(name)
        raise AttributeError(f"the config has no '{name}' section: the plugin that declares it is not installed or failed to load "
                             "(see `webdancer plugins`)")

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled by value and rebuilt with the installed plugins' schema: the class with their sections is made at run
        # time, so pickle could not find it by name (another process, a copy).
        from dataclasses import fields

        return (_restore, ({f.name: getattr(self, f.name) for f in fields(self)},))


def _restore(values: dict[str, Any]) -> "WebdancerConfig":
    return config_schema()(**values)


_schemas: dict[tuple[tuple[str, int], ...], type] = {}


def config_schema(plugins: Any = None) -> type:
    """WebdancerConfig with each installed plugin's sections beside the core's, in name order. A section name
    that is the core's or another plugin's is an error naming the plugin."""
    from dataclasses import fields, make_dataclass

    from webdancer.errors import PluginError
    from webdancer.plugins import get_plugins

    plugins = plugins or get_plugins()
    owners = plugins.owners("config_sections")
    sections = plugins.components("config_sections")
    core = {f.name for f in fields(WebdancerConfig)}
    for name in sections:
        if name in core:
            raise PluginError(f"plugin '{owners[name]}' registers a config section '{name}', which is a section of the core; rename it")
    key = tuple(sorted((name, id(cls)) for name, cls in sections.items()))
    if key not in _schemas:
        schema = make_dataclass("WebdancerConfig", [(name, sections[name], field(default_factory=sections[name])) for name in sorted(sections)],
                                bases=(WebdancerConfig,))
        schema.__module__ = __name__
        _schemas[key] = schema
    return _schemas[key]
