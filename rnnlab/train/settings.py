"""Typed trainer settings (the ``trainer`` config group, as plain Python)."""

from __future__ import annotations

from dataclasses import dataclass

from rnnlab.train.precision import PRECISIONS


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
    #: save a resumable checkpoint every N optimizer steps (None: only at epoch ends)
    checkpoint_every: int | None = None
    #: ... and at the end of every N-th epoch (and always after the last one)
    checkpoint_every_epochs: int = 1
    #: make CUDA kernels deterministic (torch.use_deterministic_algorithms); slower on GPU
    deterministic: bool = False
    #: ``fp32``, or ``bf16`` mixed precision for the training forward pass (rnnlab.train.precision)
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.max_epochs <= 0:
            raise ValueError(f"trainer.max_epochs must be positive, got {self.max_epochs}")
        if self.log_every <= 0:
            raise ValueError(f"trainer.log_every must be positive, got {self.log_every}")
        if self.eval_every <= 0:
            raise ValueError(f"trainer.eval_every must be positive, got {self.eval_every}")
        if self.checkpoint_every is not None and self.checkpoint_every <= 0:
            raise ValueError(
                f"trainer.checkpoint_every must be positive or null, got {self.checkpoint_every}"
            )
        if self.checkpoint_every_epochs <= 0:
            raise ValueError(
                f"trainer.checkpoint_every_epochs must be positive, got {self.checkpoint_every_epochs}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"trainer.precision must be one of {', '.join(PRECISIONS)}, got '{self.precision}'"
            )
        if self.clip_grad_norm is not None and self.clip_grad_norm <= 0:
            raise ValueError(
                f"trainer.clip_grad_norm must be positive or null, got {self.clip_grad_norm}"
            )
