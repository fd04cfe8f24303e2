"""Errors a user can act on. Each message names the file, column, subject or config key at fault."""


class AeBatchError(Exception):
    """Base class: the CLI prints these as one clear line instead of a traceback."""


class ConfigError(AeBatchError):
    """A config key is missing, unknown, of the wrong type or out of range."""


class DataError(AeBatchError):
    """Input data is malformed: a missing column, bad values, unknown subjects, unreadable files."""


class TrainingError(AeBatchError):
    """Training failed in a way the user can act on (e.g. the loss diverged)."""


class TrainingInterrupted(AeBatchError):
    """Training stopped on SIGTERM/SIGINT after saving a resumable checkpoint (exit status 143)."""

    exit_code = 143
