"""GRU cell (Cho et al. 2014), ``nn.GRU``'s function.

Gates in PyTorch's order (reset, update, new):
n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)),  h_t = (1 − z) ⊙ n + z ⊙ h_{t-1}.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from rnnlab.cells.base import State
from rnnlab.cells.fused import FusedCell


class GRUCell(FusedCell):
    """GRU; the state is ``(h,)``."""

    fused_module = nn.GRU
    gates: ClassVar[int] = 3
    additive: ClassVar[bool] = False

    def update(self, gi_t: Tensor, gh_t: Tensor, state: State) -> tuple[Tensor, State]:
        (h,) = state
        i_r, i_z, i_n = gi_t.chunk(3, dim=-1)  # each (B, H)
        h_r, h_z, h_n = gh_t.chunk(3, dim=-1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        h = (1 - z) * n + z * h
        return h, (h,)
