"""Base for cells that have a fused PyTorch kernel (``nn.RNN``, ``nn.LSTM``, ``nn.GRU``).

The cell owns a one-layer fused module and keeps its parameters in that module's layout
(``rnn.weight_ih_l0``, ``rnn.weight_hh_l0``, ``rnn.bias_ih_l0``, ``rnn.bias_hh_l0``), so the
fused path (cuDNN on a GPU, PyTorch's native kernel on the CPU) and the stepwise path in
:meth:`forward` compute the same function with the same weights.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from rnnlab.cells.base import Cell, State


class FusedCell(Cell):
    """A cell whose whole-sequence pass can use a fused kernel when ``fused=True``."""

    fused_module: ClassVar[type[nn.RNNBase]]
    fused_kwargs: ClassVar[dict] = {}

    def __init__(self, *, input_size: int, hidden_size: int, fused: bool = True) -> None:
        super().__init__(input_size=input_size, hidden_size=hidden_size)
        self.fused = fused
        self.rnn = self.fused_module(input_size, hidden_size, num_layers=1, **self.fused_kwargs)

    @property
    def path(self) -> str:
        return "fused" if self.fused else "stepwise"

    @property
    def weights(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(W_ih, W_hh, b_ih, b_hh) in the fused layout: (G·H, I), (G·H, H), (G·H,), (G·H,)."""
        rnn = self.rnn
        return rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0

    def sequence(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        if not self.fused:
            return super().sequence(x, state)
        hx = tuple(s.unsqueeze(0).contiguous() for s in state)  # each (1, B, H)
        out, hn = self.rnn(x, hx if self.state_size > 1 else hx[0])  # out: (T, B, H)
        hn = hn if isinstance(hn, tuple) else (hn,)
        return out, tuple(h.squeeze(0) for h in hn)  # each (B, H)
