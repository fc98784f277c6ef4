"""minLSTM (Feng et al. 2024, "Were RNNs All We Needed?").

An LSTM whose gates read the input only, with the forget and input gates normalised to sum
to one (the paper's length-independent scaling):

    f_t = σ(W_f x_t + b_f),  i_t = σ(W_i x_t + b_i),  h̃_t = g(W_h x_t + b_h)
    h_t = f'_t ⊙ h_{t-1} + i'_t ⊙ h̃_t,   f' = f / (f + i),  i' = i / (f + i)

computed as i' = σ(d), f' = 1 − i' with d = softplus(−k_f) − softplus(−k_i) = log i − log f
(the log-space form of the paper's appendix B.3.2), which stays finite and exact for gate
pre-activations of any size. g is the paper's positive map, as in minGRU. 3·H·(I + 1)
parameters.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnlab.cells.minimal import MinimalCell


class MinLSTMCell(MinimalCell):
    """minLSTM; the state is ``(h,)`` (no separate cell state). Projection rows:
    [forget | input | h̃]."""

    gates: ClassVar[int] = 2

    def gate(self, k: Tensor) -> Tensor:
        k_f, k_i = k.chunk(2, dim=-1)  # each (..., H)
        return torch.sigmoid(F.softplus(-k_f) - F.softplus(-k_i))  # i' = σ(log i − log f)

    @staticmethod
    def fused_gate(k: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        # −k_f and −k_i as contiguous copies (F.logsigmoid would save the negation, but it
        # measured 10^4 times slower than softplus on small tensors with two threads)
        neg_f, neg_i = (part.neg() for part in k.chunk(2, dim=-1))  # each (T, B, H)
        d = F.softplus(neg_f).sub_(F.softplus(neg_i))
        return d.sigmoid_(), (neg_f, neg_i)

    @staticmethod
    def fused_gate_backward(
        saved: tuple[Tensor, ...], z: Tensor, a: Tensor, dz: Tensor, *, out: Tensor
    ) -> None:
        neg_f, neg_i = saved
        dd = dz.mul_(z).mul_(a)  # ∂L/∂d: σ'(d) = z (1 − z)
        dk_f, dk_i = out.chunk(2, dim=-1)
        torch.mul(dd, torch.sigmoid(neg_i), out=dk_i)  # ∂d/∂k_i = σ(−k_i)
        torch.mul(dd, torch.sigmoid(neg_f), out=dk_f).neg_()  # ∂d/∂k_f = −σ(−k_f)
