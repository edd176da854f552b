"""User-facing errors: each says what was wrong, where, and what to do."""


class WebdancerError(Exception):
    """An error the CLI prints as one clear message (exit code 1), never as a traceback."""

    exit_code = 1


class ConfigError(WebdancerError):
    """A config file, key or value is wrong (exit code 2)."""

    exit_code = 2


class RecordError(WebdancerError):
    """A JSON record on disk is missing a field or has the wrong type."""


class PluginError(WebdancerError):
    """A plugin is broken or two plugins register the same name."""


class ModelError(WebdancerError):
    """The model endpoint failed after all retries."""
