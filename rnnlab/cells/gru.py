"""GRU cell (Cho et al. 2014), ``nn.GRU``'s function.

Gates in PyTorch's order (reset, update, new):
n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)),  h_t = (1 − z) ⊙ n + z ⊙ h_{t-1}.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnlab.cells.base import State
from rnnlab.cells.fused import FusedCell


class GRUCell(FusedCell):
    """GRU; the state is ``(h,)``."""

    fused_module = nn.GRU

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        (h,) = state
        w_ih, w_hh, b_ih, b_hh = self.weights
        gi = x_t @ w_ih.T + b_ih  # (B, 3H)
        gh = h @ w_hh.T + b_hh  # (B, 3H)
        i_r, i_z, i_n = gi.chunk(3, dim=1)
        h_r, h_z, h_n = gh.chunk(3, dim=1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        h = (1 - z) * n + z * h
        return h, (h,)
