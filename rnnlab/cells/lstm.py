"""LSTM cell (Hochreiter & Schmidhuber 1997, with forget gate), ``nn.LSTM``'s function.

Gates in PyTorch's order (input, forget, cell, output):
c_t = f ⊙ c_{t-1} + i ⊙ g,  h_t = o ⊙ tanh(c_t).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from rnnlab.cells.base import State
from rnnlab.cells.fused import FusedCell


class LSTMCell(FusedCell):
    """LSTM; the state is ``(h, c)``."""

    fused_module = nn.LSTM
    state_size: ClassVar[int] = 2

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        h, c = state
        w_ih, w_hh, b_ih, b_hh = self.weights
        gates = x_t @ w_ih.T + b_ih + h @ w_hh.T + b_hh  # (B, 4H)
        i, f, g, o = gates.chunk(4, dim=1)  # each (B, H)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)
