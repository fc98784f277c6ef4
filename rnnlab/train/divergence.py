"""The divergence check, kept on the device between the steps that read it.

Checking each step's loss on the host (``math.isfinite(loss.item())``) makes the host wait
for the device at every step, so on a GPU the next step's kernels cannot be queued while
this one runs. Instead the epoch's running loss sum (which turns non-finite at the first
non-finite loss and stays so) is watched on the device: :class:`DivergenceWatch` keeps the
last optimizer step at which that sum was still finite, a tensor updated by two small
kernels per step and nothing read back. The loop reads it on the steps it samples anyway
(``trainer.log_every``), before a checkpoint and at the end of the epoch, in the same one
copy as the values it logs, so a diverged run still fails with the epoch and the first step
whose loss was not finite.
"""

from __future__ import annotations

import torch
from torch import Tensor


class DivergenceWatch:
    """The last step of this epoch whose running loss sum ``total`` was finite, on the
    device of ``total``."""

    def __init__(self, total: Tensor, *, step: int) -> None:
        # steps before ``step`` were checked already (an earlier epoch, or before a resume)
        self.last_finite = torch.full((), step, dtype=torch.int64, device=total.device)

    def update(self, total: Tensor, *, step: int) -> None:
        """After step ``step`` added its loss to ``total``: no host wait."""
        self.last_finite = torch.where(torch.isfinite(total), step, self.last_finite)

    def read(self, *values: Tensor) -> tuple[list[float], int]:
        """``values`` (0-d tensors) as floats, and the first step whose loss was not finite
        (only meaningful once the sum is not finite), in one device-to-host copy."""
        stacked = torch.stack([v.detach().double() for v in (*values, self.last_finite)])
        *floats, last = stacked.tolist()  # the one wait for the device
        return floats, int(last) + 1
