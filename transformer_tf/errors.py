"""Exceptions the CLI maps to exit codes: user errors (2, no traceback), write failures and
stopped training (1), preemption (128 + the signal)."""

from __future__ import annotations

import signal


class UserError(Exception):
    """Bad user input: a config, a path, a data file, a name. The CLI prints it and exits 2."""


class ConfigError(UserError, ValueError):
    """An invalid configuration value, with the file and key path it came from."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None):
        self.file = file
        self.key = key
        where = ", ".join(p for p in (file, f"key `{key}`" if key else None) if p)
        super().__init__(f"{where}: {message}" if where else message)


class DecodingOptionsError(UserError, ValueError):
    """An invalid decoding setting (:class:`~transformer_tf.inference.options.DecodingOptions`):
    a beam size, n-best count, length or sampling setting out of range, or sampling with a beam."""


class DataError(UserError):
    """Unreadable or inconsistent data files."""


class UnknownNameError(UserError, KeyError):
    """A name that no registry slot knows."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes.
        return str(self.args[0])


class RunLockedError(UserError):
    """The run directory is in use by another trainer (its lock is held)."""


class DamagedCheckpointError(UserError):
    """A checkpoint asked for by name (a step, or ``best``) cannot be read."""


class RunWriteError(Exception):
    """Writing the run directory or an export failed (no space, read-only, permission).

    Not a UserError: the input was fine, the environment failed. The CLI prints the message on
    one line and exits 1, without a traceback unless ``-v``. The message names what failed and
    where; the trainer adds which checkpoint is intact and the command that resumes.

    Args:
        what: str, what was being written ("checkpoint ckpt-30", "train_log.jsonl", ...).
        path: str or PathLike, where.
        reason: str, the operating system's or TensorFlow's reason ("No space left on device").
    """

    def __init__(self, what: str, path, reason: str):
        self.what = what
        self.path = str(path)
        self.reason = reason
        self.hint = ""
        super().__init__(what, self.path, reason)

    def __str__(self) -> str:
        message = f"cannot write {self.what} to {self.path}: {self.reason}"
        return f"{message}. {self.hint}" if self.hint else message


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class WorkerLostError(RuntimeError):
    """Another worker of a multi-worker run stopped; this one stops too (no hanging)."""


class TrainingPreempted(RuntimeError):
    """SIGTERM or SIGINT stopped training at a step boundary, after a checkpoint of that step.

    Rerunning the same command resumes there and loses no step. The CLI exits with
    ``128 + signum`` (143 for SIGTERM, 130 for SIGINT), as if the signal had killed it, so a
    scheduler sees a preempted job, not a finished one. Under multi-worker every worker stops
    so, the signalled one and the others.

    Attributes:
        step: int, the step checkpointed.
        signum: int, the signal received (by this worker or, under multi-worker, another).
        checkpoint: str or None, the checkpoint written (None on non-chief workers).
    """

    def __init__(self, step: int, signum: int, checkpoint: str | None, elsewhere: bool = False):
        self.step = step
        self.signum = signum
        self.checkpoint = checkpoint
        name = signal.Signals(signum).name
        by = f"{name} to another worker" if elsewhere else name
        written = f" ({checkpoint})" if checkpoint else " (by the chief)"
        super().__init__(
            f"stopped by {by} at step {step}: checkpoint written{written}; rerun the same "
            "command to resume"
        )
