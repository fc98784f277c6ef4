"""User-facing errors, and the one policy for reporting them.

Each error names the problem and the fix in one paragraph. The click group and the Hydra job
both go through :func:`user_error` and :func:`report`: a failure the user can fix is printed as
``rnnlab: error: ...`` without a traceback and exits with ``error.exit_code``; anything else is
a bug and keeps its traceback. ``--debug`` (``RNNLAB_DEBUG=1``) shows tracebacks for all.
Nothing here imports torch or mlflow.
"""

from __future__ import annotations

import errno
import os
import sys

DEBUG_VAR = "RNNLAB_DEBUG"
#: an OSError with one of these errnos is a full or read-only place to write
WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG}
#: and one of these a file the process may not open, to read or to write
PERMISSION_ERRNOS = {errno.EACCES, errno.EPERM}


class RnnlabError(Exception):
    """A failure the user can fix: bad input, missing data, a diverged run."""

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem.rstrip(".")
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.problem}."
        if self.fix:
            text += f" {self.fix.rstrip('.')}."
        return text


class ConfigError(RnnlabError):
    """A configuration value is invalid (wrong type, out of range, unknown target)."""


class DataError(RnnlabError):
    """A dataset file is missing, corrupt or fails its checksum."""


class TrackingError(RnnlabError):
    """The MLflow tracking store cannot be reached or written."""


class DivergenceError(RnnlabError):
    """Training produced a non-finite loss."""

    exit_code = 3

    def __init__(self, *, epoch: int, step: int, loss: float) -> None:
        self.epoch = epoch
        self.step = step
        self.loss = loss
        super().__init__(
            f"Training diverged: the loss became {loss} at epoch {epoch} (step {step})",
            "Try a lower learning rate (optim.lr=...), an adaptive optimizer (optim=rmsprop "
            "or optim=adam), or gradient clipping (trainer.clip_grad_norm=1.0)",
        )


def debug_enabled() -> bool:
    """Whether tracebacks are wanted (``rnnlab --debug`` sets ``RNNLAB_DEBUG=1``)."""
    return os.environ.get(DEBUG_VAR, "") not in ("", "0")


def user_error(exc: BaseException) -> RnnlabError | None:
    """The error as the user should read it, or None when it is a bug (keep the traceback)."""
    if isinstance(exc, RnnlabError):
        return exc
    if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
        error = RnnlabError(
            f"Cannot write {exc.filename or 'a file'}: {exc.strerror}",
            "Free disk space, run from a writable directory, or point tracking.uri / "
            "MLFLOW_TRACKING_URI at a store on another disk",
        )
        error.__cause__ = exc
        return error
    if isinstance(exc, OSError) and exc.errno in PERMISSION_ERRNOS:
        error = RnnlabError(
            f"Permission denied on {exc.filename or 'a file'}: {exc.strerror}",
            "Give your user access to it (read for data and configs, write for the tracking "
            "store and its artifacts), or point RNNLAB_DATA / tracking.uri elsewhere",
        )
        error.__cause__ = exc
        return error
    return None


def report(error: RnnlabError) -> None:
    """Print ``error`` as the one-paragraph message users see."""
    print(f"rnnlab: error: {error}", file=sys.stderr, flush=True)
