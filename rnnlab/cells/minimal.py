"""What minGRU and minLSTM share: h_t = (1 − z_t) ⊙ h_{t-1} + z_t ⊙ g(u_t), and its fused scan.

Both cells project x_t to ``[k_t | u_t]``: gate pre-activations k (one block for minGRU, two
for minLSTM) and the candidate's u. Each defines its update gate z = gate(k) and that gate's
backward; the candidate g(u) is the paper's positive map (:func:`positive`).

The parallel path runs the whole sequence in one autograd node, :class:`GatedScan`: the
gate and candidate arithmetic of all T steps and the scan, with a hand-derived backward that
writes ∂L/∂[k | u] straight into one buffer. Left to autograd, the same arithmetic records a
node per elementwise op and spends about twice the memory passes (measured in
docs/benchmarks.md, "Scan cells"). The one-step path (``forward``) goes through
:meth:`coefficients`, the same arithmetic in plain autograd, so the two paths check each other.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from rnnlab.cells.scan import scan_adjoint, scan_blocked
from rnnlab.cells.scan_cell import ScanCell, positive


def lerp_scan(z: Tensor, c: Tensor, h0: Tensor, block: int | None) -> Tensor:
    """h_t = h_{t-1} + z_t (c_t − h_{t-1}): one ``lerp`` per step, or the blocked kernel."""
    if block is not None:
        return scan_blocked(torch.rsub(z, 1), z * c, h0, block)
    out = torch.empty_like(c)
    h = h0
    for t in range(c.shape[0]):
        h = torch.lerp(h, c[t], z[t], out=out[t])
    return out


def candidate(u: Tensor) -> Tensor:
    """g(u) (:func:`positive`) as a new contiguous tensor, in place on copies: a strided
    slice of the projection runs elementwise ops several times slower than a contiguous one
    on the CPU, and each autograd-free in-place op saves an allocation."""
    u = u.contiguous() if u.is_contiguous() else u.clone(memory_format=torch.contiguous_format)
    c = torch.clamp(u, max=0).sigmoid_()
    return c.add_(u.clamp_(min=0))


def sigmoid_backward(grad: Tensor, y: Tensor, *, out: Tensor) -> Tensor:
    """grad ⊙ y (1 − y) into ``out`` (which may be ``grad``): σ's backward from y = σ(x) as
    one pass over memory, where ``mul``s take two."""
    return torch.ops.aten.sigmoid_backward.grad_input(grad, y, grad_input=out)


def candidate_backward(c: Tensor, grad: Tensor, *, out: Tensor) -> None:
    """∂L/∂u = grad ⊙ g'(u) into ``out``, from c = g(u) and ``grad`` (overwritten): g'(u) is
    c (1 − c) where u ≤ 0 (there c = σ(u) ≤ ½), else 1, so ∂L/∂u = grad m (1 − m) + ¾ grad
    [c > ½] with m = min(c, ½) (m (1 − m) = ¼ above). Fused backward kernels, not
    ``where``/``masked_fill`` (3–4× slower on the CPU): four passes over memory."""
    m = sigmoid_backward(grad, c.clamp(max=0.5), out=torch.empty_like(c))
    above = torch.ops.aten.threshold_backward.grad_input(grad, c, 0.5, grad_input=grad)
    torch.add(m, above, alpha=0.75, out=out)


def pointwise_forward(
    cell: type[MinimalCell], pre: Tensor, live: Tensor | None, width: int
) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
    """z and c = g(u) of every step from ``pre`` (T, B, G·H + H), and what the gate's
    backward needs: the elementwise half of :class:`GatedScan`'s forward."""
    z, saved = cell.fused_gate(pre[..., :-width])  # z: (T, B, H), contiguous
    if live is not None:
        z = z.mul_(live)  # z = 0 on padding: the state carries through unchanged
    return z, candidate(pre[..., -width:]), saved  # c: (T, B, H)


def pointwise_backward(
    cell: type[MinimalCell], saved: tuple[Tensor, ...], z: Tensor, c: Tensor, g: Tensor, h: Tensor,
    h0: Tensor, width: int, total: int,
) -> Tensor:  # fmt: skip
    """∂L/∂pre (T, B, total) from G = ∂L/∂h through the recurrence (``g``)."""
    dpre = z.new_empty(*z.shape[:-1], total)  # (T, B, G·H + H)
    # candidate: ∂L/∂u = G z g'(u)
    candidate_backward(c, torch.mul(g, z), out=dpre[..., -width:])
    # gate: ∂L/∂z = G (c − h_{t-1})
    dz = torch.empty_like(c)
    torch.sub(c[0], h0, out=dz[0])
    torch.sub(c[1:], h[:-1], out=dz[1:])
    cell.fused_gate_backward(saved, z, dz.mul_(g), out=dpre[..., :-width])
    return dpre


class GatedScan(torch.autograd.Function):
    """The minimal cells' gates, candidate and scan over all T steps as one node."""

    @staticmethod
    def forward(ctx, pre, h0, live, block, cell):  # noqa: ANN001, ANN205 (autograd's signature)
        width = h0.shape[-1]
        z, c, saved = pointwise_forward(type(cell), pre, live, width)
        h = lerp_scan(z, c, h0, block)  # (T, B, H)
        ctx.save_for_backward(z, c, h, h0, *saved)
        ctx.block, ctx.cell, ctx.total = block, cell, pre.shape[-1]
        return h

    @staticmethod
    def backward(ctx, grad_h):  # noqa: ANN001, ANN205
        z, c, h, h0, *saved = ctx.saved_tensors
        a = torch.rsub(z, 1)  # (T, B, H): 1 - z
        g = scan_adjoint(a, grad_h.contiguous(), ctx.block)  # ∂L/∂h_t through the recurrence
        kind = type(ctx.cell)
        dpre = pointwise_backward(kind, tuple(saved), z, c, g, h, h0, h0.shape[-1], ctx.total)
        return dpre, a[0] * g[0], None, None, None


class MinimalCell(ScanCell):
    """Base of minGRU and minLSTM: a projection to ``gates + 1`` blocks of H (module docstring)."""

    #: gate blocks of H in the projection (minGRU: z; minLSTM: f and i)
    gates: ClassVar[int]

    def __init__(self, *, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size=input_size, hidden_size=hidden_size)
        self.linear = nn.Linear(input_size, (self.gates + 1) * hidden_size)  # [gates | h̃]

    def gate(self, k: Tensor) -> Tensor:
        """The update gate z (..., H) from the gate pre-activations (..., gates·H), in
        autograd (the one-step path)."""
        raise NotImplementedError

    @staticmethod
    def fused_gate(k: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        """The same z for all steps without autograd, as a new contiguous tensor, and what
        :meth:`fused_gate_backward` needs."""
        raise NotImplementedError

    @staticmethod
    def fused_gate_backward(
        saved: tuple[Tensor, ...], z: Tensor, dz: Tensor, *, out: Tensor
    ) -> None:
        """Write ∂L/∂k into ``out`` from ∂L/∂z (``dz`` may be overwritten), given z."""
        raise NotImplementedError

    def project(self, x: Tensor) -> Tensor:
        return self.linear(x)  # (..., (gates + 1)·H)

    def coefficients(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        z = self.gate(pre[..., : -self.hidden_size])
        return 1 - z, z * positive(pre[..., -self.hidden_size :])

    def scan_all(self, pre: Tensor, h0: Tensor, live: Tensor | None, block: int | None) -> Tensor:
        return GatedScan.apply(pre, h0, live, block, self)

    def scan_floats(self) -> int:
        return (self.gates + 6) * self.hidden_size  # pre, z, c, h; a, G, dpre in the backward
