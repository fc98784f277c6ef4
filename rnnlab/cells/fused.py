"""Base for cells that have a fused PyTorch kernel (``nn.RNN``, ``nn.LSTM``, ``nn.GRU``).

The cell owns a one-layer fused module and keeps its parameters in that module's layout
(``rnn.weight_ih_l0``, ``rnn.weight_hh_l0``, ``rnn.bias_ih_l0``, ``rnn.bias_hh_l0``), so the
fused path (cuDNN on a GPU, PyTorch's native kernel on the CPU) and the stepwise path in
:meth:`forward` compute the same function with the same weights.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

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

    def sequence(
        self, x: Tensor, state: State, lengths: Tensor | None = None
    ) -> tuple[Tensor, State]:
        if not self.fused:
            return super().sequence(x, state, lengths)
        hx = tuple(s.unsqueeze(0).contiguous() for s in state)  # each (1, B, H)
        hx = hx if self.state_size > 1 else hx[0]
        if lengths is None:
            out, hn = self.rnn(x, hx)  # out: (T, B, H)
        else:
            packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
            out, hn = self.rnn(packed, hx)
            out, _ = pad_packed_sequence(out, total_length=x.shape[0])  # (T, B, H), zero padded
        hn = hn if isinstance(hn, tuple) else (hn,)
        return out, tuple(h.squeeze(0) for h in hn)  # each (B, H)
