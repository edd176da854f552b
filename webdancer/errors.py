"""User-facing errors: each says what was wrong, where, and what to do."""


class WebdancerError(Exception):
    """An error the CLI prints as one clear message (exit code 1), never as a traceback."""

    exit_code = 1


class ConfigError(WebdancerError):
    """A config file, key or value is wrong (exit code 2)."""

    exit_code = 2


class RecordError(WebdancerError):
    """A JSON record on disk is missing a field or has the wrong type."""


class StorageError(WebdancerError):
    """A run file cannot be written (disk full, read-only folder, quota); what was complete is kept."""


class PluginError(WebdancerError):
    """A plugin is broken or two plugins register the same name."""


class ModelError(WebdancerError):
    """The model endpoint refused a request or sent something that is not a chat completion."""


class OutageError(WebdancerError):
    """An endpoint or backend is down, timing out or overloaded after all its retries.

    An infrastructure failure, never a result: a rollout it ends is recorded as an outage, kept out
    of every score, filter and RL batch, and retried by a rerun.
    """

    # A trainer that carries on past failed rollouts must stop on this one instead (read by our verl patch).
    stops_training = True


class ModelUnavailable(ModelError, OutageError):
    """The model endpoint did not answer (connection refused, timeouts, 5xx/429) after all retries."""
