"""minGRU (Feng, Tung, Ahmed, Bengio & Hajimirsadeghi 2024, "Were RNNs All We Needed?").

A GRU whose gates read the input only:

    z_t = σ(W_z x_t + b_z),   h̃_t = g(W_h x_t + b_h),   h_t = (1 − z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t

with g the paper's positive map (u + ½ for u ≥ 0, σ(u) below; its appendix B.3), so the
recurrence is linear in h with a = 1 − z and b = z ⊙ h̃, and a whole sequence is one GEMM and
one scan (:mod:`rnnlab.cells.scan_cell`). 2·H·(I + 1) parameters: a quarter of an LSTM's at
I = H, and no H×H product per step.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnlab.cells.scan_cell import ScanCell, positive


class MinGRUCell(ScanCell):
    """minGRU; the state is ``(h,)``."""

    def __init__(self, *, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size=input_size, hidden_size=hidden_size)
        self.linear = nn.Linear(input_size, 2 * hidden_size)  # rows: [update gate z | h̃]

    def project(self, x: Tensor) -> Tensor:
        return self.linear(x)  # (..., 2H)

    def coefficients(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        k, u = pre.chunk(2, dim=-1)  # each (..., H)
        z = torch.sigmoid(k)
        return 1 - z, z * positive(u)
