"""API keys: read from the environment variables a config names, never stored in config or logs."""

from __future__ import annotations

import os

from webdancer.errors import ConfigError


def read_secret(env_names: list[str] | str | None, what: str) -> str | None:
    """The one place that reads API keys from the environment; returns None when no name is set."""
    if not env_names:
        return None
    names = [env_names] if isinstance(env_names, str) else list(env_names)
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    raise ConfigError(f"{what} needs an API key: set the environment variable {' or '.join(names)}")
