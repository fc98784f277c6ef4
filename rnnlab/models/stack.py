"""The layer stack: runs a list of cells over a time-major sequence.

It knows nothing about which cell it runs: each layer's ``sequence`` picks its own path
(fused kernel or stepwise loop), and states are tuples of tensors for every cell.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rnnlab.cells.base import Cell, State

CellFactory = Callable[..., Cell]


@dataclass(frozen=True)
class StackSpec:
    """How to build a stack, independent of its input size (which the task knows)."""

    cell: CellFactory
    hidden_sizes: tuple[int, ...]
    dropout: float = 0.0
    name: str = "cell"

    def build(self, *, input_size: int) -> RecurrentStack:
        return RecurrentStack(
            cell=self.cell,
            input_size=input_size,
            hidden_sizes=self.hidden_sizes,
            dropout=self.dropout,
        )


class RecurrentStack(nn.Module):
    """``len(hidden_sizes)`` cells, each feeding the next; dropout between layers."""

    def __init__(
        self,
        *,
        cell: CellFactory,
        input_size: int,
        hidden_sizes: Sequence[int],
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not hidden_sizes:
            raise ValueError("a stack needs at least one layer")
        sizes = [input_size, *hidden_sizes]
        self.layers = nn.ModuleList(
            cell(input_size=i, hidden_size=h) for i, h in zip(sizes[:-1], sizes[1:], strict=True)
        )
        for layer in self.layers:
            if not isinstance(layer, Cell):
                raise TypeError(
                    f"{type(layer).__name__} is not an rnnlab Cell (subclass rnnlab.cells.Cell)"
                )
        self.dropout = nn.Dropout(dropout)
        self.hidden_size = sizes[-1]

    @property
    def path(self) -> str:
        """``fused`` when every layer runs a fused kernel, else ``stepwise``."""
        paths = {layer.path for layer in self.layers}
        return paths.pop() if len(paths) == 1 else "stepwise"

    @property
    def linear_readout(self) -> bool:
        return self.layers[-1].linear_readout

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> list[State]:
        return [layer.init_state(batch_size, device) for layer in self.layers]

    def forward(self, x: Tensor, state: list[State] | None = None) -> tuple[Tensor, list[State]]:
        """x: (T, B, I) -> outputs (T, B, H_last) and the per-layer final states."""
        if state is None:
            state = self.init_state(x.shape[1], x.device)
        new_state = []
        for index, (layer, layer_state) in enumerate(zip(self.layers, state, strict=True)):
            if index > 0:
                x = self.dropout(x)
            x, layer_state = layer.sequence(x, layer_state)  # (T, B, H_layer)
            new_state.append(layer_state)
        return x, new_state

    def scalars(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for layer in self.layers:
            out.update(layer.scalars())
        return out
