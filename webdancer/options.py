"""A component's options checked against its own `Config` dataclass, with the core config's error messages."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from omegaconf import DictConfig, OmegaConf

from webdancer.errors import ConfigError


def closest_keys(word: str, choices: list[str], what: str = "keys") -> str:
    """The valid `what` (keys, or e.g. tool names) nearest to a misspelled `word`, or all of them."""
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.5)
    if close:
        return f"closest valid {what}: {', '.join(close)}"
    return f"valid {what}: {', '.join(choices)}" if choices else f"this section takes no {what}"



def validate_options(cls: type, options: dict[str, Any], where: str) -> Any:
    """Validate a component's `options` mapping against its own Config dataclass (same errors as the core)."""
    from webdancer.typed import FieldError, from_dict

    options = OmegaConf.to_container(options, resolve=True) if isinstance(options, DictConfig) else dict(options or {})
    try:
        return from_dict(cls, options)
    except FieldError as exc:
        last = exc.path.split(".")[-1]
        if "is not a field" in exc.message:
            names = [f.name for f in dataclasses.fields(cls)]
            raise ConfigError(f"unknown config key '{where}.{exc.path}'; {closest_keys(last, names)}") from None
        raise ConfigError(f"bad value for '{where}.{exc.path}': {exc.message}") from None


