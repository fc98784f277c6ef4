"""The position-wise parts of a stack layer that the scan-cell papers wrap each cell in.

One :class:`Block` per depth of a :class:`~rnnlab.models.stack.RecurrentStack`, from the
stack options (``conf/cell_base/stack.yaml``; off for the classic cells, on in
``conf/cell/{mingru,minlstm,lru}.yaml``):

* ``pre_norm``: LayerNorm on the cell's input and on the feed-forward's input, and one
  LayerNorm after the last block (pre-LN, as in the minGRU paper's language model and
  lucidrains/minGRU-pytorch);
* ``residual``: the layer's input is added to the cell's output, and the feed-forward is
  residual too.

The cell's input norm and residual need the layer's input and output widths to match (the
residual stream). A first layer fed another width (1 or 2 raw features, an embedding of
another size) has neither: its cell reads the raw input, its projection being the
encoder, since a LayerNorm over a couple of raw features would erase them (over one feature
it is identically 0). Its feed-forward and the rest of the stack are unchanged.
* ``ffn``: a feed-forward after the cell, ``mlp`` = W₂ GELU(W₁ x) or ``glu`` = W₂ (GELU(W₁ x)
  ⊙ W₃ x) (the gated linear unit of the LRU paper's block, in Shazeer's GEGLU form), with a
  hidden width of ``ffn_mult`` × the layer's. The LRU's read-out is linear, so an LRU stack
  needs one to be more than a linear filter.

Every part acts on each time step alone, so a block is the same on a whole sequence and on
one step (:meth:`RecurrentStack.step`), and carries no state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.options import one_of

#: the values of ``cell.ffn``
FFN_CHOICES = ("none", "mlp", "glu")
FFN_RULE = one_of(*FFN_CHOICES)


@dataclass(frozen=True)
class BlockSpec:
    """The block options of a stack (``cell.residual``, ``cell.pre_norm``, ``cell.ffn``,
    ``cell.ffn_mult``)."""

    residual: bool
    pre_norm: bool
    ffn: str
    ffn_mult: int

    def __post_init__(self) -> None:
        if self.ffn not in FFN_CHOICES:
            raise ValueError(f"cell.ffn must be one of {', '.join(FFN_CHOICES)}, got {self.ffn!r}")
        if self.ffn_mult < 1:
            raise ValueError(f"cell.ffn_mult must be a positive integer, got {self.ffn_mult}")

    @property
    def active(self) -> bool:
        return self.residual or self.pre_norm or self.ffn != "none"


class FeedForward(nn.Module):
    """``mlp`` or ``glu`` of width ``mult`` × ``size`` (module docstring)."""

    def __init__(self, size: int, kind: str, mult: int) -> None:
        super().__init__()
        inner = size * mult
        self.up = nn.Linear(size, inner * (2 if kind == "glu" else 1))
        self.down = nn.Linear(inner, size)
        self.gated = kind == "glu"

    def forward(self, x: Tensor) -> Tensor:
        up = self.up(x)  # (..., inner) or (..., 2·inner)
        if self.gated:
            value, gate = up.chunk(2, dim=-1)  # each (..., inner)
            return self.down(F.gelu(value) * gate)
        return self.down(F.gelu(up))


class Block(nn.Module):
    """Norms, residual and feed-forward around the cell(s) of one depth of the stack."""

    def __init__(self, spec: BlockSpec, *, in_size: int, out_size: int) -> None:
        super().__init__()
        # norm and residual act on the residual stream: a first layer fed another width (1 or
        # 2 raw features, an embedding of another size) reads its input as it is, since a
        # LayerNorm over a few raw features would erase them (over 1 feature it is 0)
        stream = in_size == out_size
        self.residual = spec.residual and stream
        self.norm = nn.LayerNorm(in_size) if spec.pre_norm and stream else nn.Identity()
        self.ffn = None if spec.ffn == "none" else FeedForward(out_size, spec.ffn, spec.ffn_mult)
        self.ffn_norm = nn.LayerNorm(out_size) if spec.pre_norm and self.ffn else nn.Identity()
        self.ffn_residual = spec.residual

    def before(self, x: Tensor) -> Tensor:
        """What the cell reads: the layer's input, normalised with ``pre_norm``."""
        return self.norm(x)

    def after(self, x: Tensor, out: Tensor) -> Tensor:
        """The layer's output from its input ``x`` and the cell's output ``out``."""
        if self.residual:
            out = out + x
        if self.ffn is not None:
            update = self.ffn(self.ffn_norm(out))
            out = out + update if self.ffn_residual else update
        return out
