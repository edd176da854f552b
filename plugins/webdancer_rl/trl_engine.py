"""The one-machine RL engine: TRL's GRPOTrainer with our rollouts, rewards and DAPO settings.

TRL's `rollout_func` hook runs `webdancer_rl.rollout` (the rules verl's `webdancer_agent` loop
follows) with the policy being trained, one batched generation per turn, and scores every rollout
with `compute_score` (verl's reward entry), so a tool or reward plugin behaves the same on both
engines. `webdancer rl train` launches this module with `accelerate launch` (see command.sh):

    python -m webdancer_rl.trl_engine runs/<run>/rl/config.yaml
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import json
import shutil
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from webdancer.config import WebdancerConfig
from webdancer.config_loader import load_config
from webdancer.context import build_context_policy
from webdancer.errors import ConfigError, OutageError, WebdancerError
from webdancer.launch import die_with_parent
from webdancer.rewards import configured_options, configured_weights
from webdancer.token_trajectories import TokenRollout
from webdancer.tools import ToolBox
from webdancer.tracking import Reporting
from webdancer.typed import to_dict
from webdancer_rl.alarms import Alarms, Thresholds, stop_on_bad_loss
from webdancer_rl.metrics import TRL_NAMES, MetricsLog, batch_metrics, progress_line, read_metrics
from webdancer_rl.prepare import read_rows
from webdancer_rl.reward import compute_score, overlong_penalty
from webdancer_rl.rollout import ChatTokens, Generate, RolloutContext, RolloutLimits, RolloutTimes, run_rollouts
from webdancer_rl.rollout_stats import heldout_metrics
from webdancer_rl.trl_update import lean_update_trainer, row_key

# verl's loss_agg_mode -> TRL's loss_type (same aggregation of the token losses).
LOSS_TYPES = {"token-mean": "dapo", "seq-mean-token-mean": "grpo", "seq-mean-token-sum-norm": "dr_grpo"}
OVERLONG = "overlong"


def grpo_settings(cfg: WebdancerConfig, out_dir: Path, cpu: bool = False) -> dict[str, Any]:
    """GRPOConfig fields for `rl.*`: the DAPO settings verl gets, mapped onto TRL's names; `rl.trl` last. On the
    `cpu`, `rl.micro_batch_size` 0 is one rollout per pass (see cpu_defaults), elsewhere a whole mini-batch."""
    rl = cfg.rl
    if rl.loss_agg_mode not in LOSS_TYPES:
        raise ConfigError(f"rl.loss_agg_mode={rl.loss_agg_mode!r} has no TRL equivalent; choose one of {', '.join(LOSS_TYPES)}")
    if rl.ppo_mini_batch_size <= 0 or rl.train_batch_size % rl.ppo_mini_batch_size:
        raise ConfigError(f"rl.train_batch_size ({rl.train_batch_size}) must be a multiple of rl.ppo_mini_batch_size ({rl.ppo_mini_batch_size})")
    if rl.n_rollouts < 2:
        raise ConfigError(f"rl.n_rollouts must be at least 2 (group-relative advantages), got {rl.n_rollouts}")
    updates = rl.train_batch_size // rl.ppo_mini_batch_size  # optimizer steps per generated batch, as verl's mini-batches
    mini = rl.ppo_mini_batch_size * rl.n_rollouts  # rollouts per optimizer step
    micro = rl.micro_batch_size or (1 if cpu else mini)
    if mini % micro:
        raise ConfigError(f"rl.micro_batch_size ({micro}) must divide the rollouts of a mini-batch "
                          f"(rl.ppo_mini_batch_size x rl.n_rollouts = {mini})")
    weights = trl_reward_weights(cfg)
    settings: dict[str, Any] = {
        "output_dir": str(out_dir / "checkpoints"),
        "num_generations": rl.n_rollouts,
        "per_device_train_batch_size": micro,
        "gradient_accumulation_steps": mini // micro,
        "steps_per_generation": mini // micro * updates,  # TRL counts these in forward/backward passes
        "num_iterations": 1,
        "max_steps": rl.total_training_steps * updates,
        "learning_rate": rl.learning_rate,
        "lr_scheduler_type": "constant",  # verl's actor default
        "epsilon": rl.clip_ratio_low,
        "epsilon_high": rl.clip_ratio_high,
        "loss_type": LOSS_TYPES[rl.loss_agg_mode],
        "beta": rl.kl_loss_coef if rl.use_kl_loss else 0.0,
        "max_completion_length": rl.max_response_length,
        "temperature": rl.temperature,
        "top_p": rl.top_p,
        "reward_weights": list(weights.values()),
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": (rl.save_freq if rl.save_freq > 0 else rl.total_training_steps) * updates,
        "save_total_limit": 2,
        **Reporting.of(cfg).settings,  # report_to, ...: a backend other than trackio (fed from metrics.jsonl by `rl train`)
        "seed": rl.seed,
        "disable_dropout": True,
        "disable_tqdm": True,
        "remove_unused_columns": False,
    }
    if rl.trl_rollouts == "vllm":
        settings.update(vllm_settings(cfg, cpu))
    for key, value in (rl.trl or {}).items():
        settings[key] = value
    return settings


def vllm_settings(cfg: WebdancerConfig, cpu: bool) -> dict[str, Any]:
    """GRPOConfig fields for `rl.trl_rollouts=vllm`: TRL's vLLM in this process (colocate), holding a whole rollout,
    and on the CPU in float32, the policy's dtype there (vLLM's `auto` runs a float32 model in bf16 on the CPU: the
    importance ratios of a step drifted to 0.56-1.27, against 0.9995-1.0001 in float32)."""
    rl = cfg.rl
    return {"use_vllm": True, "vllm_mode": "colocate", "vllm_max_model_length": rl.max_prompt_length + rl.max_response_length,
            "vllm_gpu_memory_utilization": rl.gpu_memory_utilization, **({"vllm_dtype": "float32"} if cpu else {})}


def cpu_defaults(settings: dict[str, Any], options: dict[str, Any]) -> None:
    """What suits a CPU run, unless `rl.trl` sets it: TRL's default bf16 autocast only where the CPU multiplies bf16
    natively (AVX512-BF16 or AMX; a forward + backward of 2 x 2,000 tokens took 15-16 s with it, 28-34 s in fp32, on
    such a CPU; elsewhere oneDNN emulates bf16 and fp32 is faster), and not beside vLLM's rollouts, which sample in
    float32 on the CPU (a bf16 policy against them put the first step's importance ratios down to 0.59 on an AMX
    Xeon, where float32 on both sides keeps them within 1 %); no gradient checkpointing (TRL's default
    recomputes every layer's forward in the backward: 1.18x an update of the tiny model, for memory a CPU has);
    one rollout per forward/backward pass when `rl.micro_batch_size` is 0 (no padding, the causal attention kernel:
    see webdancer_rl.trl_update)."""
    from webdancer_models.cpu_linear import bf16_supported

    if not settings.get("use_cpu"):
        return
    if not {"bf16", "fp16"} & set(options):
        settings["bf16"] = bf16_supported() and not settings.get("use_vllm")
    if not {"gradient_checkpointing", "activation_checkpointing"} & set(options):
        # transformers' new name where it has it (TRL's default sets the old alias); vLLM's environment has an older one
        settings["activation_checkpointing" if "activation_checkpointing" in grpo_fields() else "gradient_checkpointing"] = False


def trl_reward_weights(cfg: WebdancerConfig) -> dict[str, float]:
    """One TRL reward function per reward plugin (so each is logged) plus DAPO's overlong penalty, weight 1."""
    weights = configured_weights(cfg)
    if OVERLONG in weights:
        raise ConfigError(f"'{OVERLONG}' is reserved for the overlong penalty (rl.overlong_buffer); rename that reward")
    return {**weights, OVERLONG: 1.0}


def grpo_fields() -> set[str]:
    """The option names of the installed TRL's GRPOConfig."""
    from trl import GRPOConfig

    return {f.name for f in dataclasses.fields(GRPOConfig)}


def check_trl_options(options: dict[str, Any]) -> None:
    """`rl.trl` keys must be GRPOConfig fields of the installed TRL (or the vllm_* fields of TRL with our patch);
    vLLM is chosen by `rl.trl_rollouts`, in colocate mode."""
    try:
        import trl
    except ImportError:
        raise WebdancerError("rl.engine=trl needs TRL: pip install 'webdancer[rl]' (scripts/setup.sh installs it)") from None
    import difflib

    names = grpo_fields() | set(PATCHED_FIELDS)
    for key in options or {}:
        if key not in names:
            close = difflib.get_close_matches(key, sorted(names), n=3, cutoff=0.6)
            raise ConfigError(f"rl.trl.{key}: TRL {trl.__version__}'s GRPOConfig has no such option"
                              + (f"; closest: {', '.join(close)}" if close else ""))
    if "use_vllm" in (options or {}):
        raise ConfigError("rl.trl.use_vllm: set rl.trl_rollouts=vllm instead (our rollouts through TRL's colocated vLLM)")
    if (options or {}).get("vllm_mode", "colocate") != "colocate":
        raise ConfigError(f"rl.trl.vllm_mode={options['vllm_mode']!r}: our rollouts generate with TRL's colocated vLLM "
                          "(rl.trl_rollouts=vllm); drop rl.trl.vllm_mode")


# GRPOConfig fields third_party_patches/trl adds (TRL in vLLM's environment has them; the core environment's has not).
PATCHED_FIELDS = ("vllm_dtype",)

# GRPOConfig sampling fields the batched engine does not apply, with the values that mean "off".
SAMPLING_OFF = {"top_k": (None, 0), "min_p": (None, 0, 0.0), "repetition_penalty": (None, 1, 1.0), "generation_kwargs": (None, {})}


def rollout_generation(cfg: WebdancerConfig, settings: dict[str, Any], gpu: bool) -> str:
    """`rl.trl_rollouts` for this machine (batched, generate or vllm); a ConfigError for what the batched engine
    cannot do."""
    mode = cfg.rl.trl_rollouts
    if mode == "auto":
        mode = "generate" if gpu else "batched"
    if mode != "batched":
        return mode
    if gpu:
        raise ConfigError("rl.trl_rollouts=batched: the batched engine runs on the CPU only; on a GPU set rl.trl_rollouts=generate (or auto)")
    for key, off in SAMPLING_OFF.items():
        if settings.get(key) not in off:
            raise ConfigError(f"rl.trl.{key}={settings[key]!r}: the batched rollout engine samples with rl.temperature and rl.top_p "
                              f"only; drop rl.trl.{key} or set rl.trl_rollouts=generate")
    return mode


GENERATORS = {"batched": "the batched engine on a copy of the policy", "generate": "model.generate",
              "vllm": "TRL's vLLM in this process, synced each step"}


def prompt_key(messages: list[dict[str, Any]]) -> str:
    return json.dumps([[m["role"], m["content"]] for m in messages], ensure_ascii=False)


class BackgroundLoop:
    """One event loop in a thread for the whole run: the toolbox's connections live on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="webdancer-rollouts", daemon=True)
        self.thread.start()

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def model_generate(trainer: Any) -> Generate:
    """Batched sampling with the model being trained (TRL's own settings: temperature, top_p, EOS ids)."""
    import torch
    from trl.models import unwrap_model_for_generation

    tokenizer = trainer.processing_class
    eos = set(trainer.eos_token_ids)

    async def generate(sequences: list[list[int]], budgets: list[int]) -> list[list[int]]:
        width = max(len(s) for s in sequences)
        pad = tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in sequences], device=trainer.accelerator.device)
        attention = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences], device=trainer.accelerator.device)
        config = copy.deepcopy(trainer.generation_config)
        config.max_new_tokens = max(budgets)
        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator, generation_kwargs=trainer.generation_kwargs) as model, torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=attention, generation_config=config)
        result = []
        for row, budget in zip(out[:, width:].tolist(), budgets):
            row = row[:budget]
            end = next((j for j, t in enumerate(row) if t in eos), None)
            result.append(row if end is None else row[: end + 1])
        return result

    return generate


class WebdancerRollouts:
    """TRL's `rollout_func`: our multi-turn rollouts, scored and group-filtered before TRL computes advantages."""

    def __init__(self, cfg: WebdancerConfig, tokenizer: Any, rows: list[dict[str, Any]], loop: BackgroundLoop, generation: str = "generate"):
        self.cfg, self.rl, self.loop, self.generation = cfg, cfg.rl, loop, generation
        self.chat = ChatTokens(tokenizer)
        self.limits = RolloutLimits.from_config(cfg.rl)
        self.rows = {prompt_key(r["prompt"]): r for r in rows}
        self.weights = configured_weights(cfg)
        self.reward_options = configured_options(cfg)
        self.toolbox = ToolBox.for_run(cfg)
        self.context = build_context_policy(cfg)  # agent.context, as in sampling and eval
        self.context.check_rollout_model(None)  # the policy in training generates: no endpoint for a policy to call
        self.opened = False
        self.last: dict[str, float] = {}
        self.samples: list[dict[str, Any]] = []  # the first rollout of each group in the latest batch
        self.token_records: list[TokenRollout] = []  # every rollout of the latest batch as trained (rl.record_tokens)

    def open(self) -> None:
        """Open the tools (tool sets, MCP servers) in the loop the rollouts run in. After the trainer is built: vLLM's
        start-up scans every loaded module's objects and fails on some that the search index's compiled code
        (numba, through bm25s) leaves behind."""
        self.loop.run(self.toolbox.__aenter__())
        self.opened = True

    def __call__(self, prompts: list[list[dict[str, Any]]], trainer: Any) -> dict[str, Any]:
        rows = [self.rows[prompt_key(p)] for p in prompts]
        times = RolloutTimes()
        started = time.perf_counter()
        rollouts = self._roll_out(rows, trainer, times)
        t0 = time.perf_counter()
        scores = self.loop.run(self._score(rollouts, rows))
        reward_s = time.perf_counter() - t0
        kept = self._kept(scores, trainer.num_generations) if self.rl.filter_groups else [True] * len(rollouts)
        group = trainer.num_generations
        self.samples = [{"question": rows[i]["extra_info"].get("question"), "reference": rows[i]["reward_model"]["ground_truth"],
                         "end": rollouts[i].end, "turns": rollouts[i].turns, "reward": scores[i]["reward"],
                         "rewards": {n: scores[i][n] for n in self.weights}, "kept": kept[i],
                         "segments": len(rollouts[i].restarts) + 1,
                         "text": self.chat.decode(rollouts[i].response_ids())} for i in range(0, len(rollouts), group)]
        if self.rl.record_tokens:
            self.token_records = [self._token_record(rows[i], rollouts[i], scores[i], kept[i], i % group) for i in range(len(rollouts))]
        # Where the context policy restarted a rollout, each segment is scored in its own context (the trainer reads this).
        trainer.restarted_rows = {row_key(r.prompt_ids + r.completion_ids): list(r.restarts) for r in rollouts if r.restarts}
        trainer.segment_scale = len(rollouts) / sum(len(r.restarts) + 1 for r in rollouts)
        self.last = {
            **batch_metrics(rollouts, scores, list(self.weights), kept),
            **self._store_metrics(),
            "time/generate_s": times.generate_s, "time/tools_s": times.tools_s, "time/reward_s": reward_s,
            "time/rollout_s": time.perf_counter() - started,
            "generate_tokens_per_s": times.generated_tokens / times.generate_s if times.generate_s else 0.0,
        }
        return {
            "prompt_ids": [r.prompt_ids for r in rollouts],
            "completion_ids": [r.completion_ids for r in rollouts],
            # vLLM's log-probs of the sampled tokens: TRL's importance-sampling correction against the policy's
            "logprobs": [r.logprobs for r in rollouts] if all(r.logprobs is not None for r in rollouts) else None,
            # Observations are never trained on; a dropped group (no reward spread) trains on nothing, nor does a rollout
            # the context policy broke (policy_error: not the model's doing).
            "env_mask": [r.env_mask if keep and r.end != "policy_error" else [0] * len(r.env_mask) for r, keep in zip(rollouts, kept)],
            "webdancer_scores": scores,
        }

    @staticmethod
    def _token_record(row: dict[str, Any], rollout: Any, score: dict[str, float], kept: bool, index: int) -> TokenRollout:
        question_id = str(row["extra_info"].get("question_id", ""))
        return TokenRollout(id=f"{question_id}:{index}", step=0, engine="trl", prompt=rollout.prompt_messages or row["prompt"], prompt_ids=list(rollout.prompt_ids),
                            completion_ids=list(rollout.completion_ids), loss_mask=list(rollout.env_mask) if kept else [0] * len(rollout.env_mask),
                            model_mask=list(rollout.env_mask), reward=score["reward"], end=rollout.end,
                            question_id=question_id, restarts=[list(r) for r in rollout.restarts], restart_prompts=rollout.restart_prompts,
                            logprobs=rollout.logprobs if rollout.logprobs and len(rollout.logprobs) == len(rollout.completion_ids) else None)

    def heldout(self, rows: list[dict[str, Any]], trainer: Any) -> dict[str, float]:
        """One rollout of each held-out question with the current policy, the training rules and rewards: heldout/*."""
        started = time.perf_counter()
        rollouts = self._roll_out(rows, trainer, RolloutTimes())
        scores = self.loop.run(self._score(rollouts, rows))
        measured = batch_metrics(rollouts, scores, list(self.weights), [True] * len(rollouts))
        return {**heldout_metrics(measured), "time/heldout_s": time.perf_counter() - started}

    def _roll_out(self, rows: list[dict[str, Any]], trainer: Any, times: RolloutTimes) -> list[Any]:
        """One rollout of each row's prompt with the policy, under the rollout rules."""
        with self._turns(trainer, times) as generate:
            # The engine runs each request to its own end: rollouts go on their own. model.generate pads a batch: together.
            contexts = [RolloutContext(self.context, r["prompt"], self.cfg.agent.max_context_tokens, self.chat.count) for r in rows]
            return self.loop.run(run_rollouts([self.chat.prompt(r["prompt"]) for r in rows], generate, self.toolbox, self.chat,
                                              self.limits, times, lockstep=self.generation != "batched", contexts=contexts))

    @contextlib.contextmanager
    def _turns(self, trainer: Any, times: RolloutTimes) -> Iterator[Generate]:
        """This batch's turn generator (`rl.trl_rollouts`); the batched engine's start and stop count as generation time."""
        if self.generation == "vllm":
            from webdancer_rl.vllm_turns import vllm_turns

            yield vllm_turns(trainer, list(trainer.eos_token_ids))
            return
        if self.generation != "batched":
            yield model_generate(trainer)
            return
        from trl.models import unwrap_model_for_generation

        from webdancer_rl.batched_turns import EngineSettings, batched_turns

        # A new seed per batch (the draw also follows the order requests arrive in).
        settings = EngineSettings.of(self.cfg, self.limits, seed=self.rl.seed * 1_000_003 + trainer.state.global_step)
        started = time.perf_counter()
        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator) as policy, \
                batched_turns(policy, trainer.processing_class, list(trainer.eos_token_ids), settings) as generate:
            times.generate_s += time.perf_counter() - started
            yield generate
            started = time.perf_counter()
        times.generate_s += time.perf_counter() - started

    def _store_metrics(self) -> dict[str, float]:
        """The tool store's counts so far in this run, per tool (tool_store/<tool>/hits, ...), when one is on."""
        store = self.toolbox.store
        return {f"tool_store/{tool}/{key}": value for tool, c in (store.summary() if store else {}).items() for key, value in c.items()}

    async def _score(self, rollouts: list[Any], rows: list[dict[str, Any]]) -> list[dict[str, float]]:
        rl = self.rl

        async def one(rollout, row) -> dict[str, float]:
            response = rollout.last_response_ids()  # a restarted rollout is scored by its last segment, as verl does
            out = await compute_score(row["data_source"], self.chat.decode(response), row["reward_model"]["ground_truth"],
                                      dict(row["extra_info"] or {}), weights=self.weights, options=self.reward_options)
            out[OVERLONG] = overlong_penalty(len(response), rl.max_response_length, rl.overlong_buffer, rl.overlong_penalty)
            out["reward"] = out["score"] + out[OVERLONG]
            return out

        return await asyncio.gather(*(one(r, row) for r, row in zip(rollouts, rows)))

    def _kept(self, scores: list[dict[str, float]], group: int) -> list[bool]:
        """DAPO's dynamic sampling: a group whose rollouts all score the same teaches nothing."""
        values = [s[self.rl.filter_groups_metric] for s in scores]
        kept = []
        for start in range(0, len(values), group):
            chunk = values[start : start + group]
            kept += [len(chunk) < 2 or max(chunk) != min(chunk)] * len(chunk)
        return kept

    def close(self) -> None:
        if self.opened:
            self.loop.run(self.toolbox.aclose())
        self.loop.run(self.context.aclose())


def reward_function(name: str) -> Callable[..., list[float]]:
    """A TRL reward function that reads one component of the scores our rollout function computed."""

    def reward(completions, webdancer_scores, **_: Any) -> list[float]:
        return [s[name] for s in webdancer_scores]

    reward.__name__ = name
    return reward


def checkpoints(folder: Path) -> list[Path]:
    """The `checkpoint-N` folders, oldest first."""
    found = [p for p in folder.glob("checkpoint-*") if p.name.split("-", 1)[1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-", 1)[1]))


def complete_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints with trainer_state.json (transformers writes it last), oldest first."""
    return [p for p in checkpoints(folder) if (p / "trainer_state.json").is_file()]


def set_aside_unfinished(folder: Path) -> list[Path]:
    """Move checkpoints a crash left half-written out of the way (never deleted); returns where they went."""
    moved = []
    for path in checkpoints(folder):
        if not (path / "trainer_state.json").is_file():
            aside = path.with_name(f"{path.name}.partial-{time.strftime('%Y%m%d-%H%M%S')}")
            path.rename(aside)
            moved.append(aside)
    return moved


def model_folder_problem(path: Path) -> Optional[str]:
    if not (path / "config.json").is_file():
        return f"{path} has no config.json: not a Hugging Face model folder (set rl.model_path)"
    if not any(path.glob("*.safetensors")) and not any(path.glob("pytorch_model*.bin")):
        return f"{path} has no weights (*.safetensors or pytorch_model*.bin); set rl.model_path to a trained or exported model"
    return None


def heldout_rows(cfg: WebdancerConfig, data_dir: Path) -> list[dict[str, Any]]:
    """The fixed held-out subset `rl.eval_every` rolls out: the first `rl.eval_questions` of val.parquet by id."""
    rl = cfg.rl
    if rl.eval_every <= 0 or rl.eval_questions <= 0 or rl.total_training_steps < rl.eval_every:
        return []
    path = data_dir / "val.parquet"
    rows = read_rows(path) if path.is_file() else []
    if not rows:
        raise ConfigError(f"rl.eval_every={rl.eval_every} rolls out held-out questions and {path} has none: set rl.val_fraction "
                          "above 0 when preparing the data (`webdancer rl prepare`), or rl.eval_every=0")
    return sorted(rows, key=lambda r: str(r["extra_info"]["question_id"]))[: rl.eval_questions]


def train(cfg: WebdancerConfig, data_dir: Path, out_dir: Path, model_path: str, echo: Callable[[str], None] = print) -> Path:
    """Train with GRPO; resumes from the newest complete checkpoint; returns the final model folder."""
    import os

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    final = out_dir / "model"
    if (final / "config.json").is_file():
        echo(f"already trained: {final}")
        return final
    rows = read_rows(data_dir / "train.parquet")
    rl = cfg.rl
    if len(rows) < rl.train_batch_size:
        raise ConfigError(f"{data_dir / 'train.parquet'} has {len(rows)} questions; rl.train_batch_size is {rl.train_batch_size}")
    check_trl_options(rl.trl)
    cpu = not torch.cuda.is_available()
    settings = grpo_settings(cfg, out_dir, cpu=cpu)
    if cpu:
        settings.setdefault("use_cpu", True)
    cpu_defaults(settings, rl.trl or {})
    generation = rollout_generation(cfg, settings, gpu=not settings.get("use_cpu"))  # before loading the model
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    loop = BackgroundLoop()
    rollouts = WebdancerRollouts(cfg, tokenizer, rows, loop, generation)
    echo(f"rollout turns: {GENERATORS[generation]} (rl.trl_rollouts={rl.trl_rollouts})")
    names = list(trl_reward_weights(cfg))
    for aside in set_aside_unfinished(out_dir / "checkpoints"):
        echo(f"an unfinished checkpoint was moved to {aside}")
    done = complete_checkpoints(out_dir / "checkpoints")
    resume = done[-1] if done else None
    resume_step = json.loads((resume / "trainer_state.json").read_text())["global_step"] if resume else 0
    log = MetricsLog(out_dir / "metrics.jsonl", resume_step)
    samples = MetricsLog(out_dir / "samples.jsonl", resume_step, key=None)  # one rollout per group and step, to read
    tokens = MetricsLog(out_dir / "token_rollouts.jsonl", resume_step, key=None)  # every rollout as trained (rl.record_tokens)
    alarms = Alarms(Thresholds.of(rl), echo, history=read_metrics(out_dir / "metrics.jsonl"))
    heldout = heldout_rows(cfg, data_dir)
    total = settings["max_steps"]

    class Progress(TrainerCallback):
        def __init__(self) -> None:
            self.step_started = time.perf_counter()

        def on_step_begin(self, args, state, control, **kwargs):
            self.step_started = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:
                return
            seconds = time.perf_counter() - self.step_started
            m = {"step": state.global_step, **rollouts.last, **{ours: logs[k] for k, ours in TRL_NAMES.items() if k in logs},
                 "seconds_per_step": seconds, "time/update_s": max(0.0, seconds - rollouts.last.get("time/rollout_s", 0.0))}
            batch = len(alarms.rows) + 1  # generated batches so far (a batch's later updates log no reward)
            if heldout and "reward/mean" in m and batch % rl.eval_every == 0:
                m.update(rollouts.heldout(heldout, trainer))
            stop_on_bad_loss(m, lambda: f"The last checkpoint ({(complete_checkpoints(out_dir / 'checkpoints') or ['none yet'])[-1]}) is intact.")
            m["alarms"] = alarms.check(m)
            log.write(m)
            for sample in rollouts.samples:
                samples.write({"step": state.global_step, **sample})
            for record in rollouts.token_records:  # `step`: the update that trained it (sampled by the policy of step - 1)
                tokens.write(to_dict(dataclasses.replace(record, step=state.global_step)))
            rollouts.samples, rollouts.token_records, rollouts.last = [], [], {}  # further updates on the same batch log TRL's numbers only
            echo(progress_line(m, total, [n for n in names if n != OVERLONG]))

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    trainer = lean_update_trainer(GRPOTrainer)(
        model=model,
        reward_funcs=[reward_function(n) for n in names],
        args=GRPOConfig(**settings),
        train_dataset=Dataset.from_list([{"prompt": r["prompt"]} for r in rows]),
        processing_class=tokenizer,
        rollout_func=rollouts,
        callbacks=[Progress()],
    )
    trainer.remove_callback(PrinterCallback)
    rollouts.open()
    if resume:
        echo(f"resuming from {resume}")
    try:
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    finally:
        log.close()
        samples.close()
        tokens.close()
        rollouts.close()
        loop.close()
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(str(tmp))
    tmp.rename(final)
    echo(f"model: {final}")
    return final


def main(argv: Optional[list[str]] = None) -> int:
    """Train from the resolved config `webdancer rl train` wrote (rl.data_dir, rl.output_dir, rl.model_path set)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m webdancer_rl.trl_engine RUN_DIR/rl/config.yaml", file=sys.stderr)
        return 2
    die_with_parent()  # `accelerate launch` started this process; if it is killed, nothing else would stop this one
    # transformers' deprecation notices about arguments TRL passes say nothing a user can act on.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")
    # TRL 1.16 names vLLM 0.31 as its newest tested; with 0.32 in vLLM's environment it warns at each import (six
    # times). That pair, with our patch, is what tests/test_rl_vllm.py runs.
    warnings.filterwarnings("ignore", message="TRL currently supports vLLM versions")
    try:
        cfg = load_config(args[0])
        train(cfg, Path(cfg.rl.data_dir), Path(cfg.rl.output_dir), cfg.rl.model_path, echo=lambda s: print(s, flush=True))
    except OutageError as exc:  # no rollout of the failed step was scored or trained on
        print(f"error: {exc}\nthe step that hit it was not trained on; bring the service back and rerun: training "
              "resumes from the last checkpoint", file=sys.stderr, flush=True)
        return exc.exit_code
    except WebdancerError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
