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
        last = self.rnn.summary(out)  # (B, H): each direction after the whole sequence
        if self.readout is not None:
            last = self.readout(last)  # (B, 1)
        return last.squeeze(-1)  # (B,)

    def scalars(self) -> dict[str, float]:
        return self.rnn.scalars()


class SequenceClassifier(nn.Module):
    """Maps padded (T, B, I) inputs and their lengths (B,) to (B, K) class logits, from each
    direction's output after reading the whole sequence (the stack packs the padding away):
    the forward direction's at the sequence's own last step, the backward's at its first."""

    def __init__(self, *, stack: StackSpec, input_size: int, classes: int, dropout: float) -> None:
        super().__init__()
        self.rnn = stack.build(input_size=input_size)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.rnn.hidden_size, classes)

    def features(self, x: Tensor, lengths: Tensor) -> Tensor:
        """(T, B, I) padded inputs -> (B, H·dirs): what the head reads."""
        out, _ = self.rnn(x, lengths=lengths)  # (T, B, H·dirs)
        return self.rnn.summary(out, lengths)  # (B, H·dirs)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        return self.head(self.dropout(self.features(x, lengths)))  # (B, K)
