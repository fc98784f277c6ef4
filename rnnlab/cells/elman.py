"""The linear Elman recurrence s_t = x_t·w_x + s_{t-1}·w_rec: no bias, no activation.

With one input and one unit it is the classic two-weight bit-counting demo: the exact
solution is w_x = w_rec = 1 and its loss surface is a steep, narrow valley that plain
gradient descent crawls along and RMSProp crosses.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from rnnlab.cells.base import Cell, State


class ElmanCell(Cell):
    """Linear recurrence; its output is its state, so tasks add no read-out on top."""

    linear_readout: ClassVar[bool] = False
    broadcasts: ClassVar[bool] = True  # two matmuls and a sum

    def __init__(
        self,
        *,
        input_size: int,
        hidden_size: int,
        init_w_x: float | None,
        init_w_rec: float | None,
    ) -> None:
        super().__init__(input_size=input_size, hidden_size=hidden_size)
        self.w_x = nn.Parameter(torch.empty(hidden_size, input_size))  # (H, I)
        self.w_rec = nn.Parameter(torch.empty(hidden_size, hidden_size))  # (H, H)
        with torch.no_grad():
            if init_w_x is None:
                nn.init.uniform_(self.w_x, -(input_size**-0.5), input_size**-0.5)
            else:
                self.w_x.fill_(init_w_x)
            if init_w_rec is None:
                nn.init.orthogonal_(self.w_rec)
            else:
                self.w_rec.copy_(init_w_rec * torch.eye(hidden_size))

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        (s,) = state
        s = x_t @ self.w_x.T + s @ self.w_rec.T  # (B, H)
        return s, (s,)

    def scalars(self) -> dict[str, float]:
        if self.w_x.numel() == 1 and self.w_rec.numel() == 1:
            return {"elman/w_x": self.w_x.item(), "elman/w_rec": self.w_rec.item()}
        return {}
