"""Errors raised by the scientific functions; the CLI maps them to exit codes 65 and 66."""


class InputDataError(ValueError):
    """The input exists but is malformed (exit 65). The message names the file and the fix."""


class MissingInputError(FileNotFoundError):
    """A required input is absent (exit 66). The message names what is needed and how to get it."""
