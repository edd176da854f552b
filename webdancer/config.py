"""The typed config: every section a dataclass (loaded by webdancer.config_loader)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

# The paper's reward (format score + answer score): filtering, evaluation and both RL engines start from it.
DEFAULT_REWARD_WEIGHTS = {"format": 0.1, "answer": 0.9}
# `webdancer pipeline`'s stages, in the order they run.
PIPELINE_STAGES = ("web", "model", "synth", "split", "sample", "filter", "eval_before", "sft", "eval_after", "rl", "eval_rl", "report")


def one_of(*choices: str) -> Any:
    """A string field that takes one of `choices` (the first is the default), checked on load.

    omegaconf cannot hold `Literal` fields; plugin options (built by `webdancer.typed`) use `Literal`."""
    return field(default=choices[0], metadata={"choices": choices})


@dataclass
class RunConfig:
    name: str = "default"
    root: str = "runs"

    @property
    def dir(self) -> Path:
        return Path(self.root) / self.name


@dataclass
class ModelConfig:
    """An OpenAI-compatible chat endpoint; the key is read from the env var named here, never stored."""

    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "webdancer-tiny"
    api_key_env: Optional[str] = None
    timeout_s: float = 120.0
    max_retries: int = 4
    backoff_s: float = 0.5
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 1024
    stop: list[str] = field(default_factory=lambda: ["<tool_response>"])
    extra_body: dict[str, Any] = field(default_factory=dict)


@dataclass
class AgentConfig:
    max_turns: int = 20
    max_context_tokens: int = 32768
    # The tools offered to the model, in this order; their options live under `tools.<name>`.
    tools: list[str] = field(default_factory=lambda: ["search", "visit"])
    tool_timeout_s: float = 60.0
    concurrency: int = 8
    system_prompt_file: Optional[str] = None
    current_date: Optional[str] = None


@dataclass
class ComponentConfig:
    """Names a registered component (policy, reward, ...) and passes it its own options."""

    name: str = ""
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class SiteConfig:
    """One local site, served under /<name>/ by `webdancer web serve`."""

    name: str = ""
    # html_dir: a folder of real HTML pages (Debian python3-doc); foldoc: the dictd files of dict-foldoc.
    kind: str = "html_dir"
    source: str = ""
    max_pages: int = 0  # 0 = all


@dataclass
class WebConfig:
    """The offline web: built into `root`, served on host:port (stable URLs depend on the port)."""

    root: str = ".webdancer/web"
    host: str = "127.0.0.1"
    port: int = 8765
    sites: list[SiteConfig] = field(
        default_factory=lambda: [
            SiteConfig("python", "html_dir", "/usr/share/doc/python3-doc/html"),
            SiteConfig("foldoc", "foldoc", "/usr/share/dictd"),
        ]
    )

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass
class ServeConfig:
    """How `webdancer serve` starts a model server (or where an external one is)."""

    # transformers: `transformers serve` on CPU; sglang: `python -m sglang.launch_server` on GPU;
    # external: an OpenAI-compatible server someone else runs (only health-checked).
    backend: str = "transformers"
    model_path: str = ".webdancer/models/smollm2-135m"
    host: str = "127.0.0.1"
    port: int = 8000
    external_url: str = ""
    served_model_name: str = ""
    tensor_parallel: int = 1
    context_length: int = 8192
    mem_fraction_static: float = 0.85
    health_timeout_s: float = 300.0
    extra_args: list[str] = field(default_factory=list)


@dataclass
class SampleConfig:
    n: int = 1  # rollouts per question (rejection sampling)


@dataclass
class FilterConfig:
    """The three-stage trajectory filter: validity, correctness, quality."""

    max_turns: int = 20
    max_chars: int = 200_000
    max_thought_chars: int = 6000
    # correctness: judge when `judge` names a model, else normalized exact match / containment / token F1.
    judge: dict[str, Any] = field(default_factory=dict)
    f1_threshold: float = 0.8
    # The shortest correct trajectories kept per question (0 = all that pass).
    keep_per_question: int = 1


@dataclass
class EvalConfig:
    """`webdancer eval`: k runs per question, judged by an LLM when `judge` names a model."""

    k: int = 1
    # An OpenAI-compatible judge (ModelConfig fields: base_url, model, api_key_env); empty = exact/F1 match.
    judge: dict[str, Any] = field(default_factory=dict)
    judge_prompt: str = ""  # empty: the judge reward's packaged prompt
    f1_threshold: float = 0.8
    judge_concurrency: int = 8
    # GAIA questions with an attached file: skip them (the text-only subset the WebDancer paper
    # reports), or ask them anyway (the agent cannot open the file; it must find the answer on the web).
    attachments: str = one_of("skip", "ask")


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
    val_fraction: float = 0.1
    # Train on this many of the training questions (0: all), chosen by a hash of their ids: a small set seen
    # every few steps makes the reward of early and late steps comparable (the CPU learning-signal run).
    train_questions: int = 0
    # DAPO (Yu et al. 2025): group sampling, decoupled clip (clip-higher), dynamic sampling that
    # drops groups whose rollouts all score the same, token-level loss, overlong reward shaping, no KL.
    adv_estimator: str = "grpo"
    n_rollouts: int = 8
    clip_ratio_low: float = 0.2
    clip_ratio_high: float = 0.28
    loss_agg_mode: str = "token-mean"
    filter_groups: bool = True
    # The compute_score key whose spread decides a group: `score` (weighted rewards), `reward` (score + overlong
    # penalty, verl's canonical reward) or one reward's name.
    filter_groups_metric: str = "score"
    max_num_gen_batches: int = 10
    overlong_buffer: int = 512  # tokens before the response limit where the length penalty ramps up (0 = off)
    overlong_penalty: float = 1.0
    use_kl_loss: bool = False
    kl_loss_coef: float = 0.001
    train_batch_size: int = 32  # questions per step (each rolled out n_rollouts times)
    ppo_mini_batch_size: int = 16  # questions per optimizer update (train_batch_size / this = updates per step)
    micro_batch_size: int = 0  # rollouts per forward/backward pass, gradients accumulated (0: a whole mini-batch at once)
    learning_rate: float = 1e-6
    max_prompt_length: int = 4096
    max_response_length: int = 8192
    max_turns: int = 8
    max_turn_tokens: int = 0  # new tokens one turn may generate (0: the whole remaining response budget)
    max_tool_response_length: int = 4096  # characters of a tool observation, cut as verl cuts them
    tool_response_truncate_side: str = one_of("middle", "left", "right")
    temperature: float = 1.0
    top_p: float = 1.0
    rollout_engine: str = "sglang"
    tensor_parallel: int = 1
    gpu_memory_utilization: float = 0.6
    n_gpus_per_node: int = 1
    nnodes: int = 1
    total_training_steps: int = 5
    save_freq: int = -1  # steps between checkpoints (-1: verl saves none midway; TRL saves at the end)
    test_freq: int = -1
    seed: int = 1
    logger: list[str] = field(default_factory=lambda: ["console"])
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
    title: str = "WebDancer"
    # QA JSONL whose questions are offered as examples (the embedded default's questions by default).
    examples_file: str = "configs/quickstart_questions.jsonl"
    # A run folder whose most trained model (after RL, else after SFT) the demo uses instead of serve.model_path,
    # and names on the page; empty or untrained: the configured model.
    model_run: str = ""
    # Start `serve.*` for the model (the embedded default's CPU server) and stop it with the demo.
    serve_model: bool = False


@dataclass
class SftConfig:
    """SFT with LLaMA-Factory: what goes into the YAML `webdancer sft train` writes."""

    model_path: str = ".webdancer/models/smollm2-135m"
    # LLaMA-Factory template: `qwen` renders the wire format for ChatML models (SmolLM2, Qwen2.5).
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
class WebdancerConfig:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    policy: ComponentConfig = field(default_factory=lambda: ComponentConfig(name="openai"))
    # Tool name -> that tool's options (for any tool, offered or not).
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Reward name -> weight, for scoring trajectories and RL.
    rewards: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_REWARD_WEIGHTS))
    reward_options: dict[str, dict[str, Any]] = field(default_factory=dict)
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
