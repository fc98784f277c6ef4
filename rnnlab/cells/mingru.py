"""minGRU (Feng, Tung, Ahmed, Bengio & Hajimirsadeghi 2024, "Were RNNs All We Needed?").

A GRU whose gates read the input only:

    z_t = σ(W_z x_t + b_z),   h̃_t = g(W_h x_t + b_h),   h_t = (1 − z_t) ⊙ h_{t-1} + z_t ⊙ h̃_t

with g the paper's positive map (u + ½ for u ≥ 0, σ(u) below; its appendix B.3), so the
recurrence is linear in h with a = 1 − z and b = z ⊙ h̃, and a whole sequence is one GEMM and
one scan (:mod:`rnnlab.cells.minimal`). 2·H·(I + 1) parameters: a quarter of an LSTM's at
I = H, and no H×H product per step.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from rnnlab.cells.minimal import MinimalCell, sigmoid_backward


class MinGRUCell(MinimalCell):
    """minGRU; the state is ``(h,)``. Projection rows: [update gate z | h̃]."""

    gates: ClassVar[int] = 1

    def gate(self, k: Tensor) -> Tensor:
        return torch.sigmoid(k)

    @staticmethod
    def fused_gate(k: Tensor, *, z: Tensor, saved: list[Tensor]) -> None:
        torch.sigmoid(k, out=z)

    @staticmethod
    def fused_gate_backward(
        saved: tuple[Tensor, ...], z: Tensor, dz: Tensor, *, out: Tensor
    ) -> None:
        sigmoid_backward(dz, z, out=out)  # σ' = z (1 − z), one pass
