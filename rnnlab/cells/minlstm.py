"""minLSTM (Feng et al. 2024, "Were RNNs All We Needed?").

An LSTM whose gates read the input only, with the forget and input gates normalised to sum
to one (the paper's length-independent scaling):

    f_t = σ(W_f x_t + b_f),  i_t = σ(W_i x_t + b_i),  h̃_t = g(W_h x_t + b_h)
    h_t = f'_t ⊙ h_{t-1} + i'_t ⊙ h̃_t,   f' = f / (f + i),  i' = i / (f + i)

with g the paper's positive map, as in minGRU; 3·H·(I + 1) parameters. The update gate
z = i' is computed two ways, equal to rounding:

* the one-step path (:meth:`MinLSTMCell.gate`, in autograd) as z = σ(d), f' = 1 − z with
  d = softplus(−k_f) − softplus(−k_i) = log i − log f: the log-space form of the paper's
  appendix B.3.2, finite and exact for gate pre-activations of any size;
* the parallel path (:meth:`MinLSTMCell.fused_gate`) as z = i / (f + i) from one sigmoid
  over both gate blocks, an add and a division: softplus costs about five sigmoids on the
  CPU, and this is the only transcendental pass of the gate. The ratio is exact wherever
  f + i is a normal number; where both gates underflow (both pre-activations below about
  −87 in float32, −708 in float64) it would be 0/0, so such a tensor takes the log-space
  form instead. Its backward, ∂z/∂k_i = z(1 − z)(1 − i) and ∂z/∂k_f = −z(1 − z)(1 − f),
  reads only z and the saved sigmoids.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnlab.cells.minimal import MinimalCell, sigmoid_backward


def log_space_gate(k_f: Tensor, k_i: Tensor) -> Tensor:
    """z = i / (f + i) = σ(log i − log f), finite and exact for any pre-activations."""
    return torch.sigmoid(F.softplus(-k_f) - F.softplus(-k_i))


class MinLSTMCell(MinimalCell):
    """minLSTM; the state is ``(h,)`` (no separate cell state). Projection rows:
    [forget | input | h̃]."""

    gates: ClassVar[int] = 2
    saved_blocks: ClassVar[tuple[int, ...]] = (2,)  # [f | i]

    def gate(self, k: Tensor) -> Tensor:
        return log_space_gate(*k.chunk(2, dim=-1))  # each (..., H)

    @staticmethod
    def fused_gate(k: Tensor, *, z: Tensor, saved: list[Tensor]) -> None:
        f, i = torch.sigmoid(k, out=saved[0]).chunk(2, dim=-1)  # one pass for both gates
        torch.add(f, i, out=z)
        # the ratio is exact while f + i is normal; below (both gates underflowed) the
        # log-space form (module docstring): one reduction, and a sync on a GPU
        if z.min() < torch.finfo(z.dtype).tiny:
            z.copy_(log_space_gate(*k.chunk(2, dim=-1)))
        else:
            torch.div(i, z, out=z)

    @staticmethod
    def fused_gate_backward(
        saved: tuple[Tensor, ...], z: Tensor, dz: Tensor, *, out: Tensor
    ) -> None:
        f, i = saved[0].chunk(2, dim=-1)
        dd = sigmoid_backward(dz, z, out=dz)  # ∂L/∂z · z (1 − z)
        dk_f, dk_i = out.chunk(2, dim=-1)
        torch.addcmul(dd, dd, i, value=-1, out=dk_i)  # · (1 − i): 1 − σ(k) = σ(−k)
        dd.neg_()
        torch.addcmul(dd, dd, f, value=-1, out=dk_f)  # · −(1 − f)
