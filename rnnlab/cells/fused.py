"""Base for cells that have a fused PyTorch kernel (``nn.RNN``, ``nn.LSTM``, ``nn.GRU``).

The cell owns a one-layer fused module and keeps its parameters in that module's layout
(``rnn.weight_ih_l0``, ``rnn.weight_hh_l0``, ``rnn.bias_ih_l0``, ``rnn.bias_hh_l0``), so the
fused path (cuDNN on a GPU, PyTorch's native kernel on the CPU) and the stepwise path compute
the same function with the same weights.

Options (typed keyword arguments, set from ``cell.layer.*``):

* ``fused``: use the fused kernel when the other options allow it (layer norm and zoneout are
  per-step operations, so they run the stepwise loop, compiled or not);
* ``weight_drop``: DropConnect on the recurrent matrix ``W_hh`` (Merity et al. 2017, AWD-LSTM):
  one mask per sequence, shared by all time steps. The fused path calls the same fused module
  with the dropped matrix through ``torch.func.functional_call``, so it stays fused;
* ``layer_norm``: layer normalisation (Ba et al. 2016) of the input and recurrent
  pre-activations, ``LN(W_ih x + b_ih) + LN(W_hh h + b_hh)`` (and of ``c`` for the LSTM).

The stepwise loop projects the inputs of all T steps in one matmul (``begin_sequence``) and
only the recurrent product runs per step (``step``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab.cells.base import Cell, State


class FusedCell(Cell):
    """A cell whose whole-sequence pass can use a fused kernel when ``fused=True``."""

    fused_module: ClassVar[type[nn.RNNBase]]
    fused_kwargs: ClassVar[dict] = {}
    #: gate blocks stacked in the fused weight layout (1 for RNN, 3 for GRU, 4 for LSTM)
    gates: ClassVar[int] = 1

    def __init__(
        self,
        *,
        input_size: int,
        hidden_size: int,
        fused: bool = True,
        weight_drop: float = 0.0,
        layer_norm: bool = False,
    ) -> None:
        super().__init__(input_size=input_size, hidden_size=hidden_size)
        if not 0.0 <= weight_drop < 1.0:
            raise ValueError(f"weight_drop must be in [0, 1), got {weight_drop}")
        self.fused = fused
        self.weight_drop = float(weight_drop)
        self.layer_norm = bool(layer_norm)
        self.rnn = self.fused_module(input_size, hidden_size, num_layers=1, **self.fused_kwargs)
        if self.layer_norm:
            self.ln_ih = nn.LayerNorm(self.gates * hidden_size)
            self.ln_hh = nn.LayerNorm(self.gates * hidden_size)

    @property
    def uses_fused_kernel(self) -> bool:
        return self.fused and not self.layer_norm and self.zoneout == 0

    @property
    def path(self) -> str:
        return "fused" if self.uses_fused_kernel else super().path

    @property
    def weights(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(W_ih, W_hh, b_ih, b_hh) in the fused layout: (G·H, I), (G·H, H), (G·H,), (G·H,)."""
        rnn = self.rnn
        return rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0

    def recurrent_weight(self) -> Tensor:
        """``W_hh`` with this sequence's DropConnect mask (training only), scaled by 1/(1−p)."""
        w_hh = self.rnn.weight_hh_l0
        if self.weight_drop > 0 and self.training:
            return F.dropout(w_hh, self.weight_drop, training=True)
        return w_hh

    def begin_sequence(self, x: Tensor) -> tuple[Tensor, Any]:
        w_ih, _, b_ih, b_hh = self.weights
        gi = F.linear(x, w_ih, b_ih)  # (T, B, G·H): every step's input projection at once
        if self.layer_norm:
            gi = self.ln_ih(gi)
        return gi, (self.recurrent_weight(), b_hh)

    def recurrent(self, h: Tensor, shared: Any) -> Tensor:
        """The recurrent pre-activation ``W_hh h + b_hh`` (layer-normed if asked): (B, G·H)."""
        w_hh, b_hh = shared
        gh = F.linear(h, w_hh, b_hh)  # (B, G·H)
        return self.ln_hh(gh) if self.layer_norm else gh

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        gi, shared = self.begin_sequence(x_t.unsqueeze(0))  # (1, B, G·H)
        return self.step(gi[0], state, shared)

    def sequence(
        self, x: Tensor, state: State, lengths: Tensor | None = None
    ) -> tuple[Tensor, State]:
        if not self.uses_fused_kernel:
            return super().sequence(x, state, lengths)
        hx = tuple(s.unsqueeze(0).contiguous() for s in state)  # each (1, B, H)
        hx = hx if self.state_size > 1 else hx[0]
        if lengths is None:
            out, hn = self._fused_call(x, hx)  # out: (T, B, H)
        else:
            packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
            out, hn = self._fused_call(packed, hx)
            out, _ = pad_packed_sequence(out, total_length=x.shape[0])  # (T, B, H), zero padded
        hn = hn if isinstance(hn, tuple) else (hn,)
        return out, tuple(h.squeeze(0) for h in hn)  # each (B, H)

    def _fused_call(self, inputs: Any, hx: Any) -> tuple[Any, Any]:
        if self.weight_drop > 0 and self.training:
            params = dict(self.rnn.named_parameters())
            params["weight_hh_l0"] = self.recurrent_weight()
            return functional_call(self.rnn, params, (inputs, hx))
        return self.rnn(inputs, hx)
