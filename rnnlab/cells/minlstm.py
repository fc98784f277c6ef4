"""minLSTM (Feng et al. 2024, "Were RNNs All We Needed?").

An LSTM whose gates read the input only, with the forget and input gates normalised to sum
to one (the paper's length-independent scaling):

    f_t = σ(W_f x_t + b_f),  i_t = σ(W_i x_t + b_i),  h̃_t = g(W_h x_t + b_h)
    h_t = f'_t ⊙ h_{t-1} + i'_t ⊙ h̃_t,   f' = f / (f + i),  i' = i / (f + i)

computed as f' = σ(−d), i' = σ(d) with d = softplus(−k_f) − softplus(−k_i) = log i − log f
(the log-space form of the paper's appendix B.3.2), which stays finite and exact for gate
pre-activations of any size. g is the paper's positive map, as in minGRU. 3·H·(I + 1)
parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.cells.scan_cell import ScanCell, positive


class MinLSTMCell(ScanCell):
    """minLSTM; the state is ``(h,)`` (it has no separate cell state)."""

    def __init__(self, *, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size=input_size, hidden_size=hidden_size)
        self.linear = nn.Linear(input_size, 3 * hidden_size)  # rows: [forget | input | h̃]

    def project(self, x: Tensor) -> Tensor:
        return self.linear(x)  # (..., 3H)

    def coefficients(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        k_f, k_i, u = pre.chunk(3, dim=-1)  # each (..., H)
        d = F.softplus(-k_f) - F.softplus(-k_i)  # log i - log f
        return torch.sigmoid(-d), torch.sigmoid(d) * positive(u)
