"""Typed trainer settings (the ``trainer`` config group, as plain Python)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainerSettings:
    """Keys every task honours."""

    max_epochs: int = 10
    #: clip the global gradient norm to this value; None disables clipping
    clip_grad_norm: float | None = None
    #: log the sampled per-step metrics (train/step_loss, grad_norm) every N optimizer steps
    log_every: int = 50
    #: evaluate the validation split every N epochs (and always after the last one)
    eval_every: int = 1
    #: progress bar: None = only when stderr is a terminal
    progress: bool | None = None

    def __post_init__(self) -> None:
        if self.max_epochs <= 0:
            raise ValueError(f"trainer.max_epochs must be positive, got {self.max_epochs}")
        if self.log_every <= 0:
            raise ValueError(f"trainer.log_every must be positive, got {self.log_every}")
        if self.eval_every <= 0:
            raise ValueError(f"trainer.eval_every must be positive, got {self.eval_every}")
        if self.clip_grad_norm is not None and self.clip_grad_norm <= 0:
            raise ValueError(
                f"trainer.clip_grad_norm must be positive or null, got {self.clip_grad_norm}"
            )
