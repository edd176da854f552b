"""What a run folder (`runs/<run>/`) holds once stages have written it: the models it trained, and where
rollouts that an outage ended are kept apart from the results."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

# Newest first: RL's final model, then the SFT checkpoint.
TRAINED = (("rl/model", "after RL"), ("sft", "after SFT"))


def newest_model(run_dir: str | Path) -> Optional[tuple[Path, str]]:
    """The most trained model of a run folder and what it is ("after RL", "after SFT"), or None."""
    for sub, label in TRAINED:
        path = Path(run_dir) / sub
        if (path / "config.json").is_file() and any(path.glob("*.safetensors")):
            return path, label
    return None


def outages_path(out: Path) -> Path:
    """Where the rollouts that an outage ended are recorded, beside the results (`out`) they are not part of."""
    return out.with_name(out.name.removesuffix(".jsonl") + ".outages.jsonl")
