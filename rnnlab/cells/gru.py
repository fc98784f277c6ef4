"""GRU cell (Cho et al. 2014), ``nn.GRU``'s function.

Gates in PyTorch's order (reset, update, new):
n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)),  h_t = (1 − z) ⊙ n + z ⊙ h_{t-1}.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from rnnlab.cells.base import State
from rnnlab.cells.fused import FusedCell


class GRUCell(FusedCell):
    """GRU; the state is ``(h,)``."""

    fused_module = nn.GRU
    gates: ClassVar[int] = 3

    def step(self, gi_t: Tensor, state: State, shared: Any) -> tuple[Tensor, State]:
        (h,) = state
        gh = self.recurrent(h, shared)  # (B, 3H)
        i_r, i_z, i_n = gi_t.chunk(3, dim=1)
        h_r, h_z, h_n = gh.chunk(3, dim=1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        h = (1 - z) * n + z * h
        return h, (h,)
