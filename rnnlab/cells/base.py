"""The Cell interface shared by every recurrent layer, built-in or user-written.

A cell is an ``nn.Module`` with

* ``init_state(batch_size, device) -> tuple[Tensor, ...]``: the zero state, always a tuple
  (``(h,)`` for RNN/GRU, ``(h, c)`` for LSTM), so no caller ever asks "is it an LSTM";
* ``forward(x_t, state) -> (h_t, new_state)``: one time step, ``x_t`` of shape (B, I),
  ``h_t`` of shape (B, H);
* ``sequence(x, state) -> (outputs, state)``: a whole time-major sequence, ``x`` of shape
  (T, B, I), outputs (T, B, H). The default runs :meth:`forward` step by step; cells that
  map onto a fused kernel (``nn.RNN``/``nn.LSTM``/``nn.GRU``) override it.

Cells also report ``hidden_size``, whether a task should put a linear read-out on top
(``linear_readout``), which path :meth:`sequence` takes (``path``), and ``scalars()``: a few
named numbers worth logging per epoch (the Elman cell's two weights, for instance).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

State = tuple[Tensor, ...]


class Cell(nn.Module):
    """Base class for one recurrent layer; subclasses implement :meth:`forward`."""

    #: whether a sequence-to-one task should add a linear layer on the last hidden state
    linear_readout: ClassVar[bool] = True
    #: number of tensors in the state tuple
    state_size: ClassVar[int] = 1

    def __init__(self, *, input_size: int, hidden_size: int) -> None:
        super().__init__()
        if input_size <= 0 or hidden_size <= 0:
            raise ValueError(
                f"cell sizes must be positive, got input_size={input_size}, hidden_size={hidden_size}"
            )
        self.input_size = input_size
        self.hidden_size = hidden_size

    @property
    def path(self) -> str:
        """Which implementation :meth:`sequence` uses: ``fused`` or ``stepwise``."""
        return "stepwise"

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The all-zero initial state: ``state_size`` tensors of shape (B, H)."""
        weight = next(self.parameters())
        return tuple(
            torch.zeros(
                batch_size, self.hidden_size, device=device or weight.device, dtype=weight.dtype
            )
            for _ in range(self.state_size)
        )

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:  # pragma: no cover
        raise NotImplementedError

    def sequence(
        self, x: Tensor, state: State, lengths: Tensor | None = None
    ) -> tuple[Tensor, State]:
        """Run the cell over a time-major sequence ``x`` (T, B, I) -> outputs (T, B, H).

        With ``lengths`` (B,), sequence b only advances for its first ``lengths[b]`` steps:
        its state is carried unchanged through the padding and its padded outputs are 0,
        the same contract as ``pack_padded_sequence`` on the fused path.
        """
        outputs = []
        for t, x_t in enumerate(x.unbind(0)):  # x_t: (B, I)
            h_t, new_state = self(x_t, state)
            if lengths is None:
                state = new_state
            else:
                live = (lengths > t).unsqueeze(1)  # (B, 1)
                state = tuple(
                    torch.where(live, n, o) for n, o in zip(new_state, state, strict=True)
                )
                h_t = h_t * live
            outputs.append(h_t)
        return torch.stack(outputs, dim=0), state  # (T, B, H)

    def scalars(self) -> dict[str, float]:
        """Named scalars to log once per epoch; empty for most cells."""
        return {}
