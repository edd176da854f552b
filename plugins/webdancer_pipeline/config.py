"""The pipeline's config section (`pipeline`) and its stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from webdancer.config import one_of

# `webdancer pipeline`'s stages, in the order they run.
PIPELINE_STAGES = ("web", "model", "synth", "split", "sample", "filter", "eval_before", "sft", "eval_after", "rl", "eval_rl", "report")
# Stages a config may add to pipeline.stages: eval_control evaluates the SFT checkpoint a second time (eval/control),
# the same compute as after_rl without RL: the noise a paired after-RL difference has to beat.
OPTIONAL_STAGES = ("eval_control",)
# The evaluations a run can hold (runs/<run>/eval/<name>), in order, with their titles in the report.
EVAL_TITLES = {"before": "before SFT", "after": "after SFT", "control": "after SFT again (control)", "after_rl": "after RL"}


@dataclass
class PipelineConfig:
    """`webdancer pipeline`: which stages run, in order, and the sizes of the small ones."""

    name: ClassVar[str] = "pipeline"  # the config section it is read from

    stages: list[str] = field(default_factory=lambda: list(PIPELINE_STAGES))
    eval_questions: int = 10  # CrawlQA questions held out of training, asked before and after SFT
    model_sample_questions: int = 4  # training questions rolled out by the model policy in `sample` (-1 = all)
    # The teacher for `sample` (ModelConfig fields: a hosted instruct or reasoning model); empty = `model`.
    teacher: dict[str, Any] = field(default_factory=dict)
    sft_port: int = 8001  # where the fine-tuned model is served for eval_after
    rl_port: int = 8002  # where the RL-trained model is served for eval_rl
    # auto: train with rl.engine=trl always, with verl only when a GPU is visible; never: prepare the data only.
    rl_train: str = one_of("auto", "always", "never")
