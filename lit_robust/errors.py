"""Exceptions for bad input. The CLI prints their message (no traceback) and exits with status 2."""


class LitRobustError(Exception):
    """Base class of every user-facing error raised by lit_robust."""


class ConfigError(LitRobustError, ValueError):
    """A configuration value is invalid (the message names the field and the accepted range)."""


class DataNotFoundError(LitRobustError, FileNotFoundError):
    """Dataset files are missing (the message names the directory and how to get the data)."""


class DataCorruptError(LitRobustError, ValueError):
    """A dataset file is there but cannot be read (wrong magic number or size, truncated pickle): the
    message names the directory, the reader's reason and how to fetch the file again."""


class TrainingDivergedError(LitRobustError, ArithmeticError):
    """The training loss became non-finite (the message names the step, the method, the value and the last
    good checkpoint, which is left untouched)."""


class NonFiniteAttackError(LitRobustError, ArithmeticError):
    """An attack produced non-finite inputs (the model's gradient was NaN or infinite somewhere): they are
    never returned, so nothing trains or is evaluated on them."""


class Preempted(LitRobustError):
    """The fit was told to stop (SIGUSR1/SIGTERM) and stopped after writing an exactly resumable
    ``last.ckpt`` (and, under SLURM, requeueing the job). ``signum`` is the signal that stopped it; the CLI
    exits with ``128 + signum``, the shell's convention for a process ended by that signal."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
