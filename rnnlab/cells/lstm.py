"""LSTM cell (Hochreiter & Schmidhuber 1997, with forget gate), ``nn.LSTM``'s function.

Gates in PyTorch's order (input, forget, cell, output):
c_t = f ⊙ c_{t-1} + i ⊙ g,  h_t = o ⊙ tanh(c_t)  (tanh(LN(c_t)) with layer norm).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from rnnlab.cells.base import State
from rnnlab.cells.fused import FusedCell


class LSTMCell(FusedCell):
    """LSTM; the state is ``(h, c)``."""

    fused_module = nn.LSTM
    state_size: ClassVar[int] = 2
    gates: ClassVar[int] = 4

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.layer_norm:
            self.ln_c = nn.LayerNorm(self.hidden_size)

    def update(self, gi_t: Tensor, gh_t: Tensor, state: State) -> tuple[Tensor, State]:
        _, c = state
        gates = gi_t + gh_t  # (B, 4H)
        i, f, g, o = gates.chunk(4, dim=-1)  # each (B, H)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(self.ln_c(c) if self.layer_norm else c)
        return h, (h, c)
