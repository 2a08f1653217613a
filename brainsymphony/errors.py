"""Errors of the model package (it knows nothing of exit codes; the CLI maps them)."""


class CheckpointError(ValueError):
    """A checkpoint or bundle does not match what is expected; the message says which key or field."""


class ConfigError(ValueError):
    """A model configuration holds an unknown field or an impossible value; the message says which."""
