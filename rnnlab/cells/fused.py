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

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab.cells.base import Cell, State
from rnnlab.data.transfer import to_device


class BatchedRecurrentGrad(torch.autograd.Function):
    """A (T, B, G·H) tensor of zeros that the stepwise loop adds to ``W_hh h_{t-1} + b_hh``.

    The loop itself multiplies by detached copies of ``W_hh`` and ``b_hh``, so autograd does
    not compute T small weight-gradient products, one per step. Instead the gradient that
    reaches these zeros is exactly ∂L/∂(W_hh h_{t-1} + b_hh) for every step, and the backward
    here turns it into the weight gradients with one (G·H, T·B) × (T·B, H) GEMM, as the fused
    kernels do. ``holder["h_prev"]`` (T, B, H) is filled in after the loop (``end_sequence``).
    """

    @staticmethod
    def forward(ctx, w_hh: Tensor, b_hh: Tensor, holder: dict, shape: torch.Size) -> Tensor:
        ctx.holder = holder
        return w_hh.new_zeros(()).expand(shape)  # no memory: a broadcast zero

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None, None]:
        h_prev = ctx.holder["h_prev"]  # (T, B, H)
        grad_2d = grad.reshape(-1, grad.shape[-1])  # (T·B, G·H)
        w_grad = grad_2d.T @ h_prev.reshape(-1, h_prev.shape[-1])  # (G·H, H)
        return w_grad, grad_2d.sum(0), None, None


class FusedCell(Cell):
    """A cell whose whole-sequence pass can use a fused kernel when ``fused=True``.

    Its single step works on the last dimension only (linear maps, gates chunked along it),
    so ``forward`` broadcasts leading dimensions of the input against the state's."""

    fused_module: ClassVar[type[nn.RNNBase]]
    fused_kwargs: ClassVar[dict] = {}
    #: gate blocks stacked in the fused weight layout (1 for RNN, 3 for GRU, 4 for LSTM)
    gates: ClassVar[int] = 1
    #: whether the pre-activation is gi + gh throughout (RNN, LSTM; not the GRU's r ⊙ gh_n)
    additive: ClassVar[bool] = True
    broadcasts: ClassVar[bool] = True

    def __init__(
        self,
        *,
        input_size: int,
        hidden_size: int,
        fused: bool,
        weight_drop: float,
        layer_norm: bool,
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

    def begin_sequence(self, x: Tensor) -> tuple[Any, Any]:
        w_ih, _, b_ih, b_hh = self.weights
        gi = F.linear(x, w_ih, b_ih)  # (T, B, G·H): every step's input projection at once
        if self.layer_norm:
            gi = self.ln_ih(gi)
        w_hh = self.recurrent_weight()
        if not (torch.is_grad_enabled() and (w_hh.requires_grad or b_hh.requires_grad)):
            return gi, (w_hh, b_hh, None)
        # The loop multiplies by detached copies of W_hh and b_hh; their gradient for all
        # steps comes from one GEMM in BatchedRecurrentGrad's backward (see its docstring).
        holder: dict[str, Tensor] = {}
        zeros = BatchedRecurrentGrad.apply(w_hh, b_hh, holder, gi.shape)  # (T, B, G·H)
        shared = (w_hh.detach(), b_hh.detach(), holder)
        if self.additive and not self.layer_norm:
            # gates = gi + gh: adding the zeros to gi once gives them the same gradient
            return gi + zeros, shared  # (T, B, G·H)
        return (gi, zeros), shared

    def end_sequence(self, shared: Any, initial: State, outputs: Tensor) -> None:
        holder = shared[2]
        if holder is not None:  # h_{t-1} of every step: h_0, then the outputs but the last
            holder["h_prev"] = torch.cat([initial[0].unsqueeze(0), outputs[:-1]]).detach()

    def step(self, p_t: Any, state: State, shared: Any) -> tuple[Tensor, State]:
        gi_t, zeros_t = p_t if isinstance(p_t, tuple) else (p_t, None)
        w_hh, b_hh, _ = shared
        gh_t = F.linear(state[0], w_hh, b_hh)  # (B, G·H)
        if zeros_t is not None:
            gh_t = gh_t + zeros_t  # 0 in value; carries the gradient to W_hh and b_hh
        if self.layer_norm:
            gh_t = self.ln_hh(gh_t)
        return self.update(gi_t, gh_t, state)

    def update(self, gi_t: Tensor, gh_t: Tensor, state: State) -> tuple[Tensor, State]:
        """The cell's gate arithmetic from the input and recurrent pre-activations (..., G·H),
        along the last dimension (the two may broadcast against each other and the state)."""
        raise NotImplementedError

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        """One step on its own (a decoder's loop, decoding): the two projections and the
        gates. The sequence loop's batched weight gradient (BatchedRecurrentGrad) saves
        nothing for one step and costs an autograd node and a concat per step, so it is
        not used here; the function and its gradients are the same."""
        w_ih, _, b_ih, b_hh = self.weights
        gi_t = F.linear(x_t, w_ih, b_ih)  # (B, G·H)
        gh_t = F.linear(state[0], self.recurrent_weight(), b_hh)  # (B, G·H)
        if self.layer_norm:
            gi_t, gh_t = self.ln_ih(gi_t), self.ln_hh(gh_t)
        return self.update(gi_t, gh_t, state)

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
            out, hn = self._packed_call(x, hx, lengths)
        hn = hn if isinstance(hn, tuple) else (hn,)
        return out, tuple(h.squeeze(0) for h in hn)  # each (B, H)

    def _packed_call(self, x: Tensor, hx: Any, lengths: Tensor) -> tuple[Tensor, Any]:
        """The fused kernel over padded ``x`` (T, B, I) of host ``lengths`` (B,): outputs
        (T, B, H), zero on padding, and the final states at each sequence's own last step.

        The batch is sorted by length on the host and packed as sorted: PyTorch's own
        ``enforce_sorted=False`` path sorts on the host too, but then copies the order to the
        device synchronously and, unpacking, copies the inverse back to the host, two waits
        for the GPU in every call. Here both orders travel in one queued copy."""
        if lengths.device.type != "cpu":  # the contract is host lengths; a device copy waits
            lengths = lengths.cpu()
        order = torch.argsort(lengths, descending=True, stable=True)  # (B,) on the host
        orders = to_device(torch.stack([order, torch.argsort(order)]), x.device)  # (2, B)
        forward, back = orders[0], orders[1]
        packed = pack_padded_sequence(
            x.index_select(1, forward), lengths.index_select(0, order), enforce_sorted=True
        )
        sort = tuple(h.index_select(1, forward) for h in (hx if isinstance(hx, tuple) else (hx,)))
        out, hn = self._fused_call(packed, sort if isinstance(hx, tuple) else sort[0])
        out, _ = pad_packed_sequence(out, total_length=x.shape[0])  # (T, B, H) in length order
        hn = tuple(h.index_select(1, back) for h in (hn if isinstance(hn, tuple) else (hn,)))
        return out.index_select(1, back), hn if isinstance(hx, tuple) else hn[0]

    def _fused_call(self, inputs: Any, hx: Any) -> tuple[Any, Any]:
        if self.weight_drop > 0 and self.training:
            params = dict(self.rnn.named_parameters())
            params["weight_hh_l0"] = self.recurrent_weight()
            return functional_call(self.rnn, params, (inputs, hx))
        return self.rnn(inputs, hx)
