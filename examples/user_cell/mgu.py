"""A user-written cell: the minimal gated unit (Zhou, Wu, Zhang & Zhou 2016).

One gate does the work of the GRU's two:

    f_t = σ(W_f x_t + U_f h_{t-1} + b_f)
    h̃_t = tanh(W_h x_t + U_h (f_t ⊙ h_{t-1}) + b_h)
    h_t = (1 − f_t) ⊙ h_{t-1} + f_t ⊙ h̃_t

All a cell needs: subclass ``rnnlab.cells.Cell``, accept ``input_size`` and ``hidden_size``
as keyword arguments, and implement ``forward(x_t, state) -> (h_t, new_state)`` with the state
a tuple. ``conf/cell/mgu.yaml`` next to this file points ``_target_`` at the class; run it with

    cd examples/user_cell
    PYTHONPATH=. rnnlab train --config-dir conf cell=mgu task=bitcount

The stack gives it everything else: several layers, per-layer widths, bidirectional layers,
dropout, zoneout and the compiled loop (``cell.compile=true``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnlab.cells import Cell, State


class MGUCell(Cell):
    """Minimal gated unit; the state is ``(h,)``."""

    def __init__(self, *, input_size: int, hidden_size: int, forget_bias: float) -> None:
        super().__init__(input_size=input_size, hidden_size=hidden_size)
        self.x2fh = nn.Linear(input_size, 2 * hidden_size)  # [W_f; W_h] and [b_f; b_h]
        self.h2f = nn.Linear(hidden_size, hidden_size, bias=False)  # U_f
        self.h2h = nn.Linear(hidden_size, hidden_size, bias=False)  # U_h
        with torch.no_grad():
            self.x2fh.bias[:hidden_size].fill_(forget_bias)

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        (h,) = state
        xf, xh = self.x2fh(x_t).chunk(2, dim=1)  # each (B, H)
        f = torch.sigmoid(xf + self.h2f(h))
        candidate = torch.tanh(xh + self.h2h(f * h))
        h = (1 - f) * h + f * candidate
        return h, (h,)
