"""Sequence-to-one regression: a cell stack, then a read-out of the last hidden state."""

from __future__ import annotations

from torch import Tensor, nn

from rnnlab.models.stack import StackSpec


class SequenceRegressor(nn.Module):
    """Maps (T, B, I) inputs to (B,) predictions.

    The read-out is a linear layer unless the cell says its state already is the output
    (the linear Elman cell of the bit-count demo).
    """

    def __init__(self, *, stack: StackSpec, input_size: int) -> None:
        super().__init__()
        self.rnn = stack.build(input_size=input_size)
        self.readout = nn.Linear(self.rnn.hidden_size, 1) if self.rnn.linear_readout else None
        if self.readout is None and self.rnn.hidden_size != 1:
            raise ValueError(
                f"a cell without read-out must have hidden size 1 here, got {self.rnn.hidden_size}"
            )

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(x)  # (T, B, H)
        last = out[-1]  # (B, H)
        if self.readout is not None:
            last = self.readout(last)  # (B, 1)
        return last.squeeze(-1)  # (B,)

    def scalars(self) -> dict[str, float]:
        return self.rnn.scalars()
