"""Learning-rate schedules that ``torch.optim.lr_scheduler`` lacks, as Hydra targets.

Each is a factory taking the optimizer first, so a config can instantiate it with
``_partial_: true`` and the loop completes it with the optimizer it built.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import LambdaLR


@dataclass(frozen=True)
class FixedDecay:
    """lr multiplier after ``epochs_done`` epochs: 1 for the first ``keep_epochs`` epochs,
    then divided by ``decay`` once per further epoch (a picklable callable for LambdaLR)."""

    keep_epochs: int
    decay: float

    def __call__(self, epochs_done: int) -> float:
        # epoch e (1-based) runs after e - 1 scheduler steps; it is decayed e - keep times
        return self.decay ** -max(0, epochs_done + 1 - self.keep_epochs)


def zaremba_decay(optimizer: torch.optim.Optimizer, *, keep_epochs: int, decay: float) -> LambdaLR:
    """Zaremba et al. (2014): keep the lr for ``keep_epochs`` epochs, then divide it by
    ``decay`` after each epoch (small: 4 and 2, medium: 6 and 1.2, large: 14 and 1.15).

    Stepped once per epoch by the loop.
    """
    if keep_epochs < 0:
        raise ValueError(f"keep_epochs must be >= 0, got {keep_epochs}")
    if decay < 1:
        raise ValueError(f"decay divides the lr each epoch and must be >= 1, got {decay}")
    return LambdaLR(optimizer, lr_lambda=FixedDecay(keep_epochs=keep_epochs, decay=decay))
