"""The layer stack: runs a list of cells over a time-major sequence.

It knows nothing about which cell it runs: each layer's ``sequence`` picks its own path
(fused kernel or stepwise loop), and states are tuples of tensors for every cell. With
``bidirectional=True`` each layer has a second cell that reads every sequence backwards
(within its length), and the two outputs are concatenated.

Stack options (all from ``conf/cell/*.yaml``, see docs/cells.md): per-layer widths
(``hidden_sizes``), dropout between layers (``dropout``; with ``locked_dropout`` the mask is
the same at every time step), ``bidirectional``, ``zoneout`` and ``compile`` (the per-step
loop of non-fused cells as ``torch.compile`` graphs of ``compile_chunk`` steps). The stack
passes the last two to every layer (:meth:`Cell.set_loop_options`), so user cells get them too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rnnlab.cells.base import Cell, State
from rnnlab.models.regularisers import LockedDropout

CellFactory = Callable[..., Cell]


@dataclass(frozen=True)
class StackSpec:
    """How to build a stack, independent of its input size (which the task knows)."""

    cell: CellFactory
    hidden_sizes: tuple[int, ...]
    dropout: float
    name: str
    bidirectional: bool
    locked_dropout: bool
    zoneout: float
    compile: bool
    compile_chunk: int

    def build(self, *, input_size: int, bidirectional: bool | None = None) -> RecurrentStack:
        """The stack for ``input_size`` features; ``bidirectional=None`` takes the spec's."""
        return RecurrentStack(
            cell=self.cell,
            input_size=input_size,
            hidden_sizes=self.hidden_sizes,
            dropout=self.dropout,
            bidirectional=self.bidirectional if bidirectional is None else bidirectional,
            locked_dropout=self.locked_dropout,
            zoneout=self.zoneout,
            compile=self.compile,
            compile_chunk=self.compile_chunk,
        )


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of ``x`` (T, B, ...) within its length; padding stays in place."""
    if lengths is None:
        return x.flip(0)
    steps = torch.arange(x.shape[0], device=x.device).unsqueeze(1)  # (T, 1)
    lengths = lengths.to(x.device).unsqueeze(0)  # (1, B)
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)  # (T, B)
    index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)  # (T, B, ...)
    return x.gather(0, index)


class CellContractError(TypeError):
    """A cell does not honour the Cell interface (see rnnlab.cells.base)."""


def check_cell(cell: nn.Module) -> None:
    """One dry step on a batch of 2: the state must be a tuple of (B, H) tensors that
    ``forward`` returns in the same structure, and ``h_t`` must be (B, H)."""
    name = type(cell).__name__
    if not isinstance(cell, Cell):
        raise CellContractError(f"{name} is not an rnnlab Cell (subclass rnnlab.cells.Cell)")
    expected = (2, cell.hidden_size)
    with torch.no_grad():
        state = cell.init_state(2, "cpu")
        if not isinstance(state, tuple) or not all(isinstance(s, Tensor) for s in state):
            raise CellContractError(f"{name}.init_state must return a tuple of tensors")
        h_t, new_state = cell(torch.zeros(2, cell.input_size), state)
    if tuple(h_t.shape) != expected:
        raise CellContractError(
            f"{name}.forward returned h_t of shape {tuple(h_t.shape)}, expected (batch, hidden) = {expected}"
        )
    shapes = [tuple(s.shape) for s in new_state] if isinstance(new_state, tuple) else None
    if shapes is None or len(shapes) != len(state) or any(sh != expected for sh in shapes):
        raise CellContractError(
            f"{name}.forward returned a state of shapes {shapes}, expected a tuple of "
            f"{len(state)} tensor(s) of shape (batch, hidden) = {expected}"
        )


class RecurrentStack(nn.Module):
    """``len(hidden_sizes)`` layers of cells, each feeding the next; dropout between layers.

    States are a list with one tuple per layer and direction, layer-major
    (``[l0, l0_backward, l1, ...]``), like PyTorch's ``h_n``.
    """

    def __init__(
        self,
        *,
        cell: CellFactory,
        input_size: int,
        hidden_sizes: Sequence[int],
        dropout: float,
        bidirectional: bool,
        locked_dropout: bool,
        zoneout: float,
        compile: bool,
        compile_chunk: int,
    ) -> None:
        super().__init__()
        if not hidden_sizes:
            raise ValueError("a stack needs at least one layer")
        self.num_directions = 2 if bidirectional else 1
        self.layers = nn.ModuleList()
        in_size = input_size
        for hidden in hidden_sizes:
            for _ in range(self.num_directions):
                self.layers.append(cell(input_size=in_size, hidden_size=hidden))
            in_size = hidden * self.num_directions
        for layer in self.layers:
            check_cell(layer)
            layer.set_loop_options(zoneout=zoneout, compiled=compile, chunk=compile_chunk)
        self.dropout = LockedDropout(dropout) if locked_dropout else nn.Dropout(dropout)
        self.hidden_size = in_size

    @property
    def path(self) -> str:
        """``fused`` when every layer runs a fused kernel, else ``compiled`` or ``stepwise``."""
        paths = {layer.path for layer in self.layers}
        return paths.pop() if len(paths) == 1 else "stepwise"

    @property
    def linear_readout(self) -> bool:
        return self.layers[-1].linear_readout

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> list[State]:
        return [layer.init_state(batch_size, device) for layer in self.layers]

    def forward(
        self, x: Tensor, state: list[State] | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, list[State]]:
        """x: (T, B, I) -> outputs (T, B, H_last · directions) and the final states.

        ``lengths`` (B,) marks padding: padded outputs are 0 and final states are taken at
        each sequence's own last step.
        """
        if state is None:
            state = self.init_state(x.shape[1], x.device)
        new_state: list[State] = []
        n = self.num_directions
        for depth in range(len(self.layers) // n):
            if depth > 0 and self.dropout.p > 0:
                x = self.dropout(x)
            forward_layer = self.layers[depth * n]
            out, layer_state = forward_layer.sequence(x, state[depth * n], lengths)  # (T, B, H)
            new_state.append(layer_state)
            if n == 2:
                backward_layer = self.layers[depth * n + 1]
                reversed_out, back_state = backward_layer.sequence(
                    reverse_padded(x, lengths), state[depth * n + 1], lengths
                )
                new_state.append(back_state)
                out = torch.cat([out, reverse_padded(reversed_out, lengths)], dim=-1)  # (T, B, 2H)
            x = out
        return x, new_state

    def summary(self, out: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Each direction's output once it has read the whole sequence: (T, B, H·dirs) ->
        (B, H·dirs).

        The forward direction has read everything at each sequence's own last step
        (``lengths - 1``, or T - 1); the backward direction reads from the end, so its output
        at step 0 is the one that has read everything. Taking the last step for both would
        give the backward half a summary of one step.
        """
        batch = torch.arange(out.shape[1], device=out.device)  # (B,)
        if lengths is None:
            forward = out[-1]  # (B, H·dirs)
        else:
            last = (lengths.to(out.device) - 1).clamp_min(0)  # (B,)
            forward = out[last, batch]  # (B, H·dirs)
        if self.num_directions == 1:
            return forward
        width = out.shape[-1] // 2  # the backward half of the features
        return torch.cat([forward[:, :width], out[0, :, width:]], dim=-1)  # (B, 2H)

    def step(self, x_t: Tensor, state: list[State]) -> tuple[Tensor, list[State]]:
        """One time step of a unidirectional stack: x_t (B, I) -> (B, H_last), new states.

        Each layer runs its cell's single-step ``forward``: for T = 1 a fused kernel call's
        fixed per-call overhead outweighs the one step it computes, and the cell's ``forward``
        gives the same numbers (docs/benchmarks.md, "Cells").
        """
        if self.num_directions != 1:
            raise ValueError("step() runs a unidirectional stack one step at a time")
        new_state: list[State] = []
        for depth, layer in enumerate(self.layers):
            if depth > 0:
                x_t = self.dropout(x_t)
            x_t, layer_state = layer(x_t, state[depth])  # (B, H)
            new_state.append(layer_state)
        return x_t, new_state

    @property
    def broadcasts(self) -> bool:
        """Whether :meth:`broadcast_step` can run: one direction, every cell broadcasts."""
        return self.num_directions == 1 and all(layer.broadcasts for layer in self.layers)

    def broadcast_step(self, x_t: Tensor, state: list[State]) -> Tensor:
        """One time step whose inputs and states broadcast against each other: x_t (..., I)
        and state tensors (..., H) -> the top layer's output (broadcast shape, H_last).

        The function of a length-1 sequence through :meth:`forward` on the inputs and
        states expanded to the broadcast shape (between-layer dropout and zoneout as there),
        without the copies: each layer's projection of a small input or state is computed
        once, and only the gate arithmetic runs at the full shape.
        """
        if not self.broadcasts:
            raise ValueError("broadcast_step needs a unidirectional stack of broadcasting cells")
        for depth, layer in enumerate(self.layers):
            if depth > 0 and self.dropout.p > 0:
                x_t = self.dropout(x_t.unsqueeze(0)).squeeze(0)  # as a (1, ..., H) sequence
            x_t, new_state = layer(x_t, state[depth])  # (..., H)
            if layer.zoneout > 0:
                x_t = layer.output(layer.zone(new_state, state[depth]))
        return x_t

    def scalars(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for layer in self.layers:
            out.update(layer.scalars())
        return out
