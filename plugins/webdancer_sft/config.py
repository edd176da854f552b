"""SFT's config section (`sft`): what goes into the LLaMA-Factory YAML."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from webdancer.config import one_of


@dataclass
class SftConfig:
    """SFT with LLaMA-Factory: what goes into the YAML `webdancer sft train` writes."""

    name: ClassVar[str] = "sft"  # the config section it is read from

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
    # With use_cpu: bf16 autocast (LLaMA-Factory's `bf16: true` on the CPU; weights, gradients and optimizer state stay
    # fp32, the matmuls run in bf16). auto: where the CPU multiplies bf16 natively (AVX512-BF16 or AMX; elsewhere
    # emulated, slower than fp32), measured 1.3-1.6x a step for the tiny model, the losses within ~3 %; off: fp32.
    # An explicit extra.bf16 or extra.fp16 decides instead.
    cpu_autocast: str = one_of("auto", "bf16", "off")
    venv: str = ".venvs/sft"  # the environment `scripts/setup_sft.sh` makes
    # Passed through to the YAML untouched (deepspeed, fsdp, bf16, gradient_checkpointing, ...).
    extra: dict[str, Any] = field(default_factory=dict)
