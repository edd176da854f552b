"""The demo's config section (`demo`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass
class DemoConfig:
    """`webdancer demo`: the gradio app (model and tools come from `model`, `agent`, `tools`)."""

    name: ClassVar[str] = "demo"  # the config section it is read from

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
