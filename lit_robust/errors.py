"""Exceptions for bad input. The CLI prints their message (no traceback) and exits with status 2."""


class LitRobustError(Exception):
    """Base class of every user-facing error raised by lit_robust."""


class ConfigError(LitRobustError, ValueError):
    """A configuration value is invalid (the message names the field and the accepted range)."""


class DataNotFoundError(LitRobustError, FileNotFoundError):
    """Dataset files are missing (the message names the directory and how to get the data)."""


class TrainingDivergedError(LitRobustError, ArithmeticError):
    """The training loss became non-finite (the message names the step, the method, the value and the last
    good checkpoint, which is left untouched)."""
