"""RL's config section (`rl`): one set of settings for the verl and TRL engines."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from webdancer.config import one_of


@dataclass
class RlConfig:
    """RL (DAPO, multi-turn tool calls): `webdancer rl prepare|train`, with verl (clusters) or TRL (one machine)."""

    name: ClassVar[str] = "rl"  # the config section it is read from

    # verl: `python -m verl.trainer.main_ppo` (Ray, SGLang rollouts, GPUs); trl: TRL's GRPOTrainer on
    # this machine (CPU or one GPU). Both read the same data and train with the same rollout rules and rewards.
    engine: str = one_of("verl", "trl")
    # verl's environment, made by `scripts/setup_rl.sh` (verl + webdancer; on GPUs from the lock of rl.rollout_engine).
    # On a cluster every node needs it at this path: Ray starts every worker with its Python.
    venv: str = ".venvs/rl"
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
    # Rollouts per forward/backward pass (a GPU's, for verl: the update's and both log-prob passes'), gradients
    # accumulated. 0: TRL takes one rollout at a time on the CPU (no padding) and a whole mini-batch on a GPU; verl
    # packs micro-batches by tokens (dynamic batch size,
    # up to one whole rollout a GPU: max_prompt_length + max_response_length).
    micro_batch_size: int = 0
    learning_rate: float = 1e-6
    max_prompt_length: int = 4096  # tokens of the first prompt (system + question + tool list)
    max_response_length: int = 8192  # tokens of a whole rollout after the prompt, observations included
    max_turns: int = 8  # model turns per rollout
    max_turn_tokens: int = 0  # new tokens one turn may generate (0: the whole remaining response budget)
    max_tool_response_length: int = 4096  # characters of a tool observation, cut as verl cuts them
    tool_response_truncate_side: str = one_of("middle", "left", "right")
    temperature: float = 1.0  # rollout sampling
    top_p: float = 1.0
    # verl's rollout server, each in its own locked environment (scripts/setup_rl.sh): vllm (verl's own [vllm] pins:
    # vLLM 0.24) or sglang (0.5.14, the nearest release that installs beside verl 0.9.1; its [sglang] extra does not).
    rollout_engine: str = one_of("vllm", "sglang")
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
    # TRL: what generates the rollouts' turns. batched: the continuous batching engine `webdancer serve` runs (its
    # serve.kv_cache_tokens and serve.max_batch_tokens), in the trainer's process on a copy of the policy made for
    # each batch of rollouts, CPU only, sampling with temperature and top_p; generate: the policy's own
    # `model.generate`, one padded batch per turn; vllm: TRL's own vLLM in the trainer's process (colocate), the
    # policy's weights synced into it each step and its log-probs used for TRL's importance-sampling correction,
    # CPU or GPU, run from rl.vllm_venv; auto: batched on the CPU, generate on a GPU.
    trl_rollouts: str = one_of("auto", "batched", "generate", "vllm")
    # TRL with rl.trl_rollouts=vllm runs in vLLM's environment (scripts/setup_vllm.sh: vLLM, TRL with
    # third_party_patches/trl, webdancer).
    vllm_venv: str = ".venvs/vllm"
    # Training-health alarms (both engines' metrics; webdancer_rl.alarms): the mean of the last `alarm_window` steps
    # against the first `alarm_window` steps'. Printed once, listed per step in metrics.jsonl (`alarms`) and the report.
    alarm_window: int = 3
    alarm_tool_call_drop: float = 0.5  # tool calls per rollout below this fraction of the start's
    alarm_valid_turn_drop: float = 0.3  # the valid-turn rate this far below the start's
    alarm_format_only: float = 0.02  # the answer rewards at most this while the format reward is paid
    alarm_answered_rise: float = 0.1  # the answered rate up this much ...
    alarm_correct_fall: float = 0.05  # ... while the answer rewards fall this much
    alarm_length_growth: float = 2.0  # the mean response length past this multiple of the start's
    alarm_heldout_gap: float = 0.15  # training minus held-out reward widened this much since the first held-out check
    # TRL: every this many steps, the policy rolls out the same `eval_questions` held-out questions (val.parquet, the
    # first by id) with the training rules and rewards: `heldout/*` in metrics.jsonl and the held-out gap alarm (0: off).
    eval_every: int = 10
    eval_questions: int = 8
    # Every rollout as it was trained: TRL in rl/token_rollouts.jsonl (prompt and completion ids, loss mask, the sampler's
    # log-probs, the step), verl in rl/token_rollouts/<host>-<pid>.jsonl (the step its trainer dispatched the prompt at);
    # `webdancer traj check` re-renders them with the model's chat template.
    record_tokens: bool = True
