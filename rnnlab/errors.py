"""User-facing errors: each names the problem and the fix in one paragraph.

The CLI prints ``str(error)`` without a traceback (unless ``--debug``) and exits with
``error.exit_code``. Nothing here imports torch or mlflow.
"""

from __future__ import annotations


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
