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
# `webdancer pipeline`'s stages, in the order they run.
PIPELINE_STAGES = ("web", "model", "synth", "split", "sample", "filter", "eval_before", "sft", "eval_after", "rl", "eval_rl", "report")


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


@dataclass
class AgentConfig:
    """The ReAct loop: who writes the turns, the tools offered, turns, context budget, concurrency."""

    # The policy that writes the agent's turns (`webdancer plugins`): openai (any OpenAI-compatible model),
    # expert (the scripted teacher of the embedded web) or yours; its options live under `policies.<name>`.
    policy: str = "openai"
    # The tools offered to the model, in this order; their options live under `tools.<name>`.
    tools: list[str] = field(default_factory=lambda: ["search", "visit"])
    max_turns: int = 20
    max_context_tokens: int = 32768  # older observations are blanked to fit; the system prompt never is
    tool_timeout_s: float = 60.0
    concurrency: int = 8  # trajectories in flight (sampling, eval)
    system_prompt_file: Optional[str] = None  # your own system prompt (placeholder {date}); empty: the packaged one
    current_date: Optional[str] = None  # the date the prompt states (empty: today); fix it for reproducible runs


@dataclass
class SiteConfig:
    """One local site, served under /<name>/ by `webdancer web serve`."""

    name: str = ""  # the URL prefix /<name>/
    # html_dir: a folder of real HTML pages (Debian python3-doc); foldoc: the dictd files of dict-foldoc.
    kind: str = "html_dir"
    source: str = ""  # the folder the pages come from
    max_pages: int = 0  # 0 = all
    licence: str = ""  # the pages' licence (SPDX id), written into exported dataset cards


@dataclass
class WebConfig:
    """The offline web: built into `root`, served on host:port (stable URLs depend on the port)."""

    root: str = ".webdancer/web"  # pages.jsonl, the BM25 index, the manifest
    host: str = "127.0.0.1"
    port: int = 8765
    sites: list[SiteConfig] = field(
        default_factory=lambda: [
            SiteConfig("python", "html_dir", "/usr/share/doc/python3-doc/html", licence="PSF-2.0"),
            SiteConfig("foldoc", "foldoc", "/usr/share/dictd", licence="GFDL-1.1-or-later"),
        ]
    )

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass
class ServeConfig:
    """How `webdancer serve` starts a model server (or where an external one is)."""

    # batched: our CPU server over transformers' continuous batching (concurrent requests share each decode
    # step); transformers: `transformers serve`, one request at a time (per-request seeds); sglang:
    # `python -m sglang.launch_server` on GPU; external: an OpenAI-compatible server someone else runs.
    backend: str = "batched"
    model_path: str = ".webdancer/models/smollm2-135m"  # a Hugging Face model folder
    host: str = "127.0.0.1"
    port: int = 8000
    external_url: str = ""  # backend external: its OpenAI-compatible base URL
    served_model_name: str = ""  # sglang: the name clients send (default: the model path)
    tensor_parallel: int = 1  # sglang --tp
    context_length: int = 8192  # sglang --context-length
    mem_fraction_static: float = 0.85  # sglang --mem-fraction-static
    health_timeout_s: float = 300.0  # how long to wait for the server to become healthy
    kv_cache_tokens: int = 32768  # batched: KV cache shared by the requests in flight (46 KB a token for the tiny model)
    max_batch_tokens: int = 512  # batched: tokens in one forward pass (prefill chunks + one per decoding request)
    extra_args: list[str] = field(default_factory=list)  # appended to the server command


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
class RlConfig:
    """RL (DAPO, multi-turn tool calls): `webdancer rl prepare|train`, with verl (clusters) or TRL (one machine)."""

    # verl: `python -m verl.trainer.main_ppo` (Ray, SGLang rollouts, GPUs); trl: TRL's GRPOTrainer on
    # this machine (CPU or one GPU). Both read the same data and train with the same rollout rules and rewards.
    engine: str = one_of("verl", "trl")
    venv: str = ".venvs/rl"  # verl's environment, made by `scripts/setup_rl.sh` (verl + webdancer)
    model_path: str = ""  # default: the SFT checkpoint runs/<run>/sft if it exists, else sft.model_path
    data_dir: str = ""  # default runs/<run>/rl_data (train.parquet, val.parquet, tool_config.yaml, agent_loops.yaml)
    output_dir: str = ""  # default runs/<run>/rl (checkpoints, train.log, command.sh)
    val_fraction: float = 0.1  # questions kept for validation (by a hash of their id, so a rerun moves none)
    # Train on this many of the training questions (0: all), chosen by a hash of their ids: a small set seen
    # every few steps makes the reward of early and late steps comparable (the CPU learning-signal run).
    train_questions: int = 0
    # DAPO (Yu et al. 2025): group sampling, decoupled clip (clip-higher), dynamic sampling that
    # drops groups whose rollouts all score the same, token-level loss, overlong reward shaping, no KL.
    adv_estimator: str = "grpo"
    n_rollouts: int = 8  # rollouts per question: the group advantages are relative to
    clip_ratio_low: float = 0.2  # PPO clip below 1 (TRL: epsilon)
    clip_ratio_high: float = 0.28  # clip-higher above 1 (TRL: epsilon_high)
    loss_agg_mode: str = "token-mean"  # token-mean (TRL: dapo), seq-mean-token-mean (grpo), seq-mean-token-sum-norm (dr_grpo)
    filter_groups: bool = True  # dynamic sampling: a group without spread is not trained on
    # The compute_score key whose spread decides a group: `score` (weighted rewards), `reward` (score + overlong
    # penalty, verl's canonical reward) or one reward's name.
    filter_groups_metric: str = "score"
    max_num_gen_batches: int = 10  # verl: batches drawn to replace dropped groups before it gives up
    overlong_buffer: int = 512  # tokens before the response limit where the length penalty ramps up (0 = off)
    overlong_penalty: float = 1.0  # the penalty at the response limit
    use_kl_loss: bool = False
    kl_loss_coef: float = 0.001  # when use_kl_loss (TRL: beta)
    train_batch_size: int = 32  # questions per step (each rolled out n_rollouts times)
    ppo_mini_batch_size: int = 16  # questions per optimizer update (train_batch_size / this = updates per step)
    micro_batch_size: int = 0  # rollouts per forward/backward pass, gradients accumulated (0: a whole mini-batch at once)
    learning_rate: float = 1e-6
    max_prompt_length: int = 4096  # tokens of the first prompt (system + question + tool list)
    max_response_length: int = 8192  # tokens of a whole rollout after the prompt, observations included
    max_turns: int = 8  # model turns per rollout
    max_turn_tokens: int = 0  # new tokens one turn may generate (0: the whole remaining response budget)
    max_tool_response_length: int = 4096  # characters of a tool observation, cut as verl cuts them
    tool_response_truncate_side: str = one_of("middle", "left", "right")
    temperature: float = 1.0  # rollout sampling
    top_p: float = 1.0
    rollout_engine: str = "sglang"  # verl's rollout server (sglang, vllm)
    tensor_parallel: int = 1  # verl rollout tensor parallelism
    gpu_memory_utilization: float = 0.6  # verl rollout server's share of GPU memory
    n_gpus_per_node: int = 1
    nnodes: int = 1
    total_training_steps: int = 5  # steps: one generated batch of train_batch_size questions each
    save_freq: int = -1  # steps between checkpoints (-1: verl saves none midway; TRL saves at the end)
    test_freq: int = -1
    seed: int = 1
    logger: list[str] = field(default_factory=lambda: ["console"])  # verl's trainer.logger (file and tracking.backend are added)
    # Raw verl overrides (`key=value`, hydra syntax) appended last: anything verl has that is not above.
    extra: list[str] = field(default_factory=list)
    # TRL GRPOConfig fields set last, by name (checked against the installed TRL): anything TRL has that is not above.
    trl: dict[str, Any] = field(default_factory=dict)
    # Warnings while training (both engines' metrics): the valid-turn rate falling this far below its first
    # step's, the mean response length growing past this multiple of its first step's.
    warn_valid_turn_drop: float = 0.3
    warn_length_growth: float = 2.0


@dataclass
class PipelineConfig:
    """`webdancer pipeline`: which stages run, in order, and the sizes of the small ones."""

    stages: list[str] = field(default_factory=lambda: list(PIPELINE_STAGES))
    eval_questions: int = 10  # CrawlQA questions held out of training, asked before and after SFT
    model_sample_questions: int = 4  # training questions rolled out by the model policy in `sample` (-1 = all)
    # The teacher for `sample` (ModelConfig fields: a hosted instruct or reasoning model); empty = `model`.
    teacher: dict[str, Any] = field(default_factory=dict)
    sft_port: int = 8001  # where the fine-tuned model is served for eval_after
    rl_port: int = 8002  # where the RL-trained model is served for eval_rl
    # auto: train with rl.engine=trl always, with verl only when a GPU is visible; never: prepare the data only.
    rl_train: str = one_of("auto", "always", "never")


@dataclass
class DemoConfig:
    """`webdancer demo`: the gradio app (model and tools come from `model`, `agent`, `tools`)."""

    host: str = "127.0.0.1"
    port: int = 7860
    title: str = "WebDancer"  # the page's heading
    # QA JSONL whose questions are offered as examples (the embedded default's questions by default).
    examples_file: str = "configs/quickstart_questions.jsonl"
    # A run folder whose most trained model (after RL, else after SFT) the demo uses instead of serve.model_path,
    # and names on the page; empty or untrained: the configured model.
    model_run: str = ""
    # Start `serve.*` for the model (the embedded default's CPU server) and stop it with the demo.
    serve_model: bool = False
    # A person waits at the page: a model or backend down this long is reported, not waited for (infra.max_outage_s).
    max_outage_s: float = 20.0


@dataclass
class SftConfig:
    """SFT with LLaMA-Factory: what goes into the YAML `webdancer sft train` writes."""

    model_path: str = ".webdancer/models/smollm2-135m"
    # LLaMA-Factory template: `qwen` renders the wire format for ChatML models (SmolLM2, Qwen2.5, QwQ, Qwen3; tested).
    template: str = "qwen"
    finetuning_type: str = one_of("full", "lora", "freeze")
    lora_rank: int = 8
    cutoff_len: int = 2048
    per_device_train_batch_size: int = 2
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-5
    num_train_epochs: float = 1.0
    max_steps: int = -1
    logging_steps: int = 1
    save_steps: int = 500
    dataset_dir: str = ""  # default runs/<run>/sft_data
    output_dir: str = ""  # default runs/<run>/sft
    use_cpu: bool = True
    venv: str = ".venvs/sft"  # the environment `scripts/setup_sft.sh` makes
    # Passed through to the YAML untouched (deepspeed, fsdp, bf16, gradient_checkpointing, ...).
    extra: dict[str, Any] = field(default_factory=dict)


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
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    web: WebConfig = field(default_factory=WebConfig)
    # Synthesizer name -> its options (see `webdancer synth NAME --help`).
    synth: dict[str, dict[str, Any]] = field(default_factory=dict)
    serve: ServeConfig = field(default_factory=ServeConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    sft: SftConfig = field(default_factory=SftConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    rl: RlConfig = field(default_factory=RlConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    infra: InfraConfig = field(default_factory=InfraConfig)
    tool_store: ToolStoreConfig = field(default_factory=ToolStoreConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
