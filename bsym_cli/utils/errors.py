"""Exit codes (draft BIDS-Apps execution spec) and the errors that carry them.

Every error message says what happened, which file, and what to do.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes of ``bsym-app`` and ``bsym``."""

    OK = 0
    FAILURE = 1
    USAGE = 2  # Click's own usage errors
    INVALID_BIDS = 16
    NOTHING_SELECTED = 18
    BAD_OPTION = 64
    BAD_INPUT_DATA = 65
    MISSING_INPUT = 66
    CANNOT_WRITE = 73


class BsymError(Exception):
    """An error meant for the user; ``code`` becomes the exit status."""

    code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, *, code: ExitCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidBIDSError(BsymError):
    code = ExitCode.INVALID_BIDS


class NothingSelectedError(BsymError):
    code = ExitCode.NOTHING_SELECTED


class OptionError(BsymError):
    code = ExitCode.BAD_OPTION


class InputDataError(BsymError):
    code = ExitCode.BAD_INPUT_DATA


class MissingInputError(BsymError):
    code = ExitCode.MISSING_INPUT


class OutputError(BsymError):
    code = ExitCode.CANNOT_WRITE


def exit_code_for(exc: BaseException) -> ExitCode:
    """Map an exception from any layer to its exit code.

    ``pipelines`` and ``brainsymphony`` raise their own ``ValueError`` subclasses
    (they cannot import this module); they are bad input data (65) or missing
    input (66).
    """
    if isinstance(exc, BsymError):
        return exc.code
    from pipelines.errors import InputDataError as PipelineDataError
    from pipelines.errors import MissingInputError as PipelineMissingError

    if isinstance(exc, PipelineMissingError):
        return ExitCode.MISSING_INPUT
    if isinstance(exc, PipelineDataError):
        return ExitCode.BAD_INPUT_DATA
    from brainsymphony.errors import CheckpointError

    if isinstance(exc, CheckpointError):
        return ExitCode.BAD_INPUT_DATA
    if isinstance(exc, PermissionError):
        return ExitCode.CANNOT_WRITE
    return ExitCode.FAILURE
