"""The layer stack: runs a list of cells over a time-major sequence.

It knows nothing about which cell it runs: each layer's ``sequence`` picks its own path
(fused kernel or stepwise loop), and states are tuples of tensors for every cell. With
``bidirectional=True`` each layer has a second cell that reads every sequence backwards
(within its length), and the two outputs are concatenated.

Stack options (all from ``conf/cell/*.yaml``, see docs/cells.md): per-layer widths
(``hidden_sizes``), dropout between layers (``dropout``; with ``locked_dropout`` the mask is
the same at every time step), ``bidirectional``, ``zoneout``, ``compile`` (the per-step
loop of non-fused cells as ``torch.compile`` graphs of ``compile_chunk`` steps) and ``scan``,
``scan_chunk`` (the path of cells with a parallel scan). The stack passes the loop options to
every layer (:meth:`Cell.set_loop_options`), so user cells get them too, and each cell decides
what they mean for it. The block options (``residual``, ``pre_norm``, ``ffn``;
:mod:`rnnlab.models.blocks`) wrap each depth of the stack in position-wise parts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rnnlab.cells.base import Cell, State
from rnnlab.data.transfer import to_device
from rnnlab.models.blocks import Block, BlockSpec
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
    scan: str
    scan_chunk: int | None
    block: BlockSpec

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
            scan=self.scan,
            scan_chunk=self.scan_chunk,
            block=self.block,
        )


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of ``x`` (T, B, ...) within its length; padding stays in place."""
    if lengths is None:
        return x.flip(0)
    steps = torch.arange(x.shape[0], device=x.device).unsqueeze(1)  # (T, 1)
    lengths = to_device(lengths, x.device).unsqueeze(0)  # (1, B)
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
    (``[l0, l0_backward, l1, ...]``), like PyTorch's ``h_n``. With block options on, each
    depth also has a :class:`~rnnlab.models.blocks.Block` (``blocks``), and ``pre_norm`` adds
    a LayerNorm on the last output (``final_norm``); without them neither exists, so a
    classic stack's parameters and checkpoints are unchanged.
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
        scan: str,
        scan_chunk: int | None,
        block: BlockSpec,
    ) -> None:
        super().__init__()
        if not hidden_sizes:
            raise ValueError("a stack needs at least one layer")
        self.num_directions = 2 if bidirectional else 1
        self.layers = nn.ModuleList()
        blocks = []
        in_size = input_size
        for hidden in hidden_sizes:
            for _ in range(self.num_directions):
                self.layers.append(cell(input_size=in_size, hidden_size=hidden))
            out_size = hidden * self.num_directions
            blocks.append(Block(block, in_size=in_size, out_size=out_size))
            in_size = out_size
        self.blocks = nn.ModuleList(blocks) if block.active else None
        self.final_norm = nn.LayerNorm(in_size) if block.pre_norm else None
        for layer in self.layers:
            check_cell(layer)
            layer.set_loop_options(
                zoneout=zoneout,
                compiled=compile,
                chunk=compile_chunk,
                scan=scan,
                scan_chunk=scan_chunk,
            )
        self.dropout = LockedDropout(dropout) if locked_dropout else nn.Dropout(dropout)
        self.hidden_size = in_size

    @property
    def path(self) -> str:
        """``fused`` when every layer runs a fused kernel, ``parallel`` when every layer runs
        a parallel scan, else ``compiled`` or ``stepwise``."""
        paths = {layer.path for layer in self.layers}
        return paths.pop() if len(paths) == 1 else "stepwise"

    @property
    def linear_readout(self) -> bool:
        return self.layers[-1].linear_readout

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> list[State]:
        return [layer.init_state(batch_size, device) for layer in self.layers]

    def structural_parameters(self) -> list[nn.Parameter]:
        """Parameters a blanket re-initialisation must leave alone: the cells' own
        (:meth:`Cell.structural_parameters`) and the LayerNorms' gains and biases."""
        found = [p for layer in self.layers for p in layer.structural_parameters()]
        for module in self.modules():
            if isinstance(module, nn.LayerNorm):
                found.extend(module.parameters())
        return found

    def forward(
        self, x: Tensor, state: list[State] | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, list[State]]:
        """x: (T, B, I) -> outputs (T, B, H_last · directions) and the final states.

        ``lengths`` (B,) marks padding: padded outputs are 0 and final states are taken at
        each sequence's own last step. It lives on the host (the cells' contract); the
        reversals read one device copy of it.
        """
        if state is None:
            state = self.init_state(x.shape[1], x.device)
        new_state: list[State] = []
        n = self.num_directions
        # one device copy of the lengths, for the reversals and the blocks' padding masks
        masks = n == 2 or self.blocks is not None or self.final_norm is not None
        on_device = to_device(lengths, x.device) if masks and lengths is not None else None
        for depth in range(len(self.layers) // n):
            if depth > 0 and self.dropout.p > 0:
                x = self.dropout(x)
            block = self.blocks[depth] if self.blocks is not None else None
            inner = block.before(x) if block is not None else x
            out, states = self._depth(depth, inner, state, lengths, on_device)  # (T, B, H·n)
            new_state.extend(states)
            if block is not None:
                out = mask_padding(block.after(x, out), on_device)
            x = out
        if self.final_norm is not None:
            x = mask_padding(self.final_norm(x), on_device)
        return x, new_state

    def _depth(
        self,
        depth: int,
        x: Tensor,
        state: list[State],
        lengths: Tensor | None,
        on_device: Tensor | None,
    ) -> tuple[Tensor, list[State]]:
        """The cell(s) of one depth over the whole sequence: outputs (T, B, H·directions).
        ``lengths`` on the host for the cells, ``on_device`` its copy for the reversals."""
        n = self.num_directions
        forward_layer = self.layers[depth * n]
        out, layer_state = forward_layer.sequence(x, state[depth * n], lengths)  # (T, B, H)
        if n == 1:
            return out, [layer_state]
        backward_layer = self.layers[depth * n + 1]
        reversed_out, back_state = backward_layer.sequence(
            reverse_padded(x, on_device), state[depth * n + 1], lengths
        )
        out = torch.cat([out, reverse_padded(reversed_out, on_device)], dim=-1)  # (T, B, 2H)
        return out, [layer_state, back_state]

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
            last = (to_device(lengths, out.device) - 1).clamp_min(0)  # (B,)
            forward = out[last, batch]  # (B, H·dirs)
        if self.num_directions == 1:
            return forward
        width = out.shape[-1] // 2  # the backward half of the features
        return torch.cat([forward[:, :width], out[0, :, width:]], dim=-1)  # (B, 2H)

    def step(self, x_t: Tensor, state: list[State]) -> tuple[Tensor, list[State]]:
        """One time step of a unidirectional stack: x_t (B, I) -> (B, H_last), new states.

        Each layer runs its cell's single-step ``forward``: for T = 1 a fused kernel call's
        fixed per-call overhead outweighs the one step it computes, and the cell's ``forward``
        gives the same numbers (docs/benchmarks.md, "Cells"). A scan cell's ``forward`` is its
        sequential path. Blocks act on each step alone, so they run here unchanged.
        """
        if self.num_directions != 1:
            raise ValueError("step() runs a unidirectional stack one step at a time")
        new_state: list[State] = []
        for depth, layer in enumerate(self.layers):
            if depth > 0:
                x_t = self.dropout(x_t)
            block = self.blocks[depth] if self.blocks is not None else None
            out, layer_state = layer(block.before(x_t) if block is not None else x_t, state[depth])
            x_t = block.after(x_t, out) if block is not None else out  # (B, H)
            new_state.append(layer_state)
        if self.final_norm is not None:
            x_t = self.final_norm(x_t)
        return x_t, new_state

    @property
    def broadcasts(self) -> bool:
        """Whether :meth:`broadcast_step` can run: one direction, no blocks around the cells
        (their norms and residuals are not part of it), every cell broadcasts."""
        plain = self.blocks is None and self.final_norm is None
        return plain and self.num_directions == 1 and all(c.broadcasts for c in self.layers)

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


def mask_padding(x: Tensor, lengths: Tensor | None) -> Tensor:
    """``x`` (T, B, F) with the steps past each sequence's length set to 0."""
    if lengths is None:
        return x
    steps = torch.arange(x.shape[0], device=x.device).unsqueeze(1)  # (T, 1)
    live = to_device(lengths, x.device).unsqueeze(0) > steps  # (T, B)
    return x * live.unsqueeze(-1)
