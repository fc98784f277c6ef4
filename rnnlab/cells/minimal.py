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

#: on the CPU the node's elementwise work runs over pieces of about this many numbers per
#: (T, B, H) tensor (256 KiB of float32), so that a piece's chain of ops reads and writes the
#: cache; over whole tensors (8 MiB each in a window) every op goes to memory and back, and
#: that half of the node is memory-bound (docs/benchmarks.md, "Scan cells")
CPU_PIECE = 1 << 18


def pieces(steps: int, lanes: int, device: torch.device) -> list[slice]:
    """Time slices for the elementwise work: pieces of :data:`CPU_PIECE` numbers on the
    CPU, every step at once elsewhere (a GPU wants one large kernel per op)."""
    size = max(1, CPU_PIECE // lanes) if device.type == "cpu" else steps
    return [slice(t, min(t + size, steps)) for t in range(0, steps, size)]


def lerp_steps(z: Tensor, c: Tensor, h: Tensor, out: Tensor) -> Tensor:
    """h_t = h_{t-1} + z_t (c_t − h_{t-1}) from ``h`` over the steps of ``out``, one
    ``lerp`` per step in place; the last state."""
    # every step's views made at once by ``unbind``, not ``z[t]`` from Python: a dispatch per
    # tensor per step saved, 3-5 % of a pass at T = 256-1024 (docs/benchmarks.md, "Scan cells")
    for z_t, c_t, out_t in zip(z.unbind(0), c.unbind(0), out.unbind(0), strict=True):
        h = torch.lerp(h, c_t, z_t, out=out_t)
    return h


def adjoint_steps(z: Tensor, grad: Tensor, g: Tensor, piece: slice) -> None:
    """G_t = grad_t + (1 − z_{t+1}) G_{t+1} into ``g`` for the steps of ``piece``,
    backwards; G after the piece is already there (the pieces run last to first)."""
    first, stop = piece.start, piece.stop
    if stop == g.shape[0]:  # G_{T-1} = grad_{T-1}
        stop -= 1
        g[stop].copy_(grad[stop])
    a = torch.rsub(z[first + 1 : stop + 1], 1).unbind(0)  # a_{t+1} for t in [first, stop)
    g_s, grad_s = g[first : stop + 1].unbind(0), grad[first:stop].unbind(0)  # (lerp_steps)
    for t in range(stop - first - 1, -1, -1):  # t counted from ``first``
        torch.addcmul(grad_s[t], a[t], g_s[t + 1], out=g_s[t])


def candidate(u: Tensor, *, out: Tensor) -> None:
    """g(u) (:func:`positive`) into ``out``, in place on ``u`` (overwritten): each
    autograd-free in-place op saves an allocation."""
    torch.clamp(u, max=0, out=out).sigmoid_()
    out.add_(u.clamp_(min=0))


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


def previous_states(h: Tensor, h0: Tensor, piece: slice) -> Tensor:
    """h_{t-1} for the steps of ``piece`` (a view of ``h`` but for the first piece)."""
    if piece.start > 0:
        return h[piece.start - 1 : piece.stop - 1]
    return torch.cat([h0.unsqueeze(0), h[: piece.stop - 1]])


def pointwise_forward(
    kind: type[MinimalCell], pre: Tensor, bias: Tensor, live: Tensor | None, out: list[Tensor]
) -> None:
    """z, c = g(u) and what the gate's backward needs, from ``pre`` (n, B, G·H + H) without
    the projection's ``bias``, into ``out`` = (z, c, *saved): one piece of
    :class:`GatedScan`'s elementwise forward."""
    z, c, *saved = out
    width = z.shape[-1]
    # the bias added here, as contiguous copies: a strided slice of the projection runs
    # elementwise ops slower than a contiguous one on the CPU
    k, u = torch.add(pre[..., :-width], bias[:-width]), torch.add(pre[..., -width:], bias[-width:])
    kind.fused_gate(k, z=z, saved=saved)
    if live is not None:
        z.mul_(live)  # z = 0 on padding: the state carries through unchanged
    candidate(u, out=c)


def pointwise_backward(
    kind: type[MinimalCell], saved: tuple[Tensor, ...], z: Tensor, c: Tensor, g: Tensor,
    h_prev: Tensor, dpre: Tensor,
) -> None:  # fmt: skip
    """∂L/∂pre into ``dpre`` (n, B, G·H + H) from G = ∂L/∂h through the recurrence (``g``),
    for one piece of steps."""
    width = z.shape[-1]
    # candidate: ∂L/∂u = G z g'(u)
    candidate_backward(c, torch.mul(g, z), out=dpre[..., -width:])
    # gate: ∂L/∂z = G (c − h_{t-1})
    dz = torch.sub(c, h_prev).mul_(g)
    kind.fused_gate_backward(saved, z, dz, out=dpre[..., :-width])


class GatedScan(torch.autograd.Function):
    """The minimal cells' gates, candidate and scan over all T steps as one node, from the
    projection without its bias and the bias (added here: :meth:`MinimalCell.project_parallel`).
    On the CPU it runs piece by piece (:func:`pieces`): a piece's elementwise work, then (with
    the loop kernel) the piece's scan steps, while its numbers are still in the cache."""

    @staticmethod
    def forward(ctx, pre, bias, h0, live, block, cell):  # noqa: ANN001, ANN205 (autograd's)
        kind, (steps, batch, width) = type(cell), (*pre.shape[:2], h0.shape[-1])
        bufs = [pre.new_empty(steps, batch, n * width) for n in (1, 1, *kind.saved_blocks)]
        z, c = bufs[:2]
        h, last = torch.empty_like(c), h0
        for p in pieces(steps, h0.numel(), pre.device):
            live_p = None if live is None else live[p]
            pointwise_forward(kind, pre[p], bias, live_p, [b[p] for b in bufs])
            if block is None:
                last = lerp_steps(z[p], c[p], last, h[p])
        if block is not None:
            h = scan_blocked(torch.rsub(z, 1), z * c, h0, block)
        ctx.save_for_backward(h, h0, *bufs)
        ctx.block, ctx.kind, ctx.total = block, kind, pre.shape[-1]
        return h

    @staticmethod
    def backward(ctx, grad_h):  # noqa: ANN001, ANN205
        h, h0, z, c, *saved = ctx.saved_tensors
        grad_h, block = grad_h.contiguous(), ctx.block
        dpre = z.new_empty(*z.shape[:-1], ctx.total)  # (T, B, G·H + H)
        dbias = z.new_zeros(ctx.total)  # summed a piece at a time, while it is cached
        if block is None:  # filled piece by piece, last to first
            g = torch.empty_like(grad_h)
        else:  # ∂L/∂h_t through the recurrence
            g = scan_adjoint(torch.rsub(z, 1), grad_h, block)
        for p in reversed(pieces(z.shape[0], h0.numel(), z.device)):
            if block is None:
                adjoint_steps(z, grad_h, g, p)
            args = (tuple(s[p] for s in saved), z[p], c[p], g[p], previous_states(h, h0, p))
            pointwise_backward(ctx.kind, *args, dpre[p])
            dbias.add_(dpre[p].sum((0, 1)))
        return dpre, dbias, torch.rsub(z[0], 1).mul_(g[0]), None, None, None


class MinimalCell(ScanCell):
    """Base of minGRU and minLSTM: a projection to ``gates + 1`` blocks of H (module docstring)."""

    #: gate blocks of H in the projection (minGRU: z; minLSTM: f and i)
    gates: ClassVar[int]
    #: the widths, in blocks of H, of the tensors the gate's forward saves for its backward
    saved_blocks: ClassVar[tuple[int, ...]] = ()

    def __init__(self, *, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size=input_size, hidden_size=hidden_size)
        self.linear = nn.Linear(input_size, (self.gates + 1) * hidden_size)  # [gates | h̃]

    def gate(self, k: Tensor) -> Tensor:
        """The update gate z (..., H) from the gate pre-activations (..., gates·H), in
        autograd (the one-step path)."""
        raise NotImplementedError

    @staticmethod
    def fused_gate(k: Tensor, *, z: Tensor, saved: list[Tensor]) -> None:
        """The same z for a piece of steps without autograd, into ``z``, and what
        :meth:`fused_gate_backward` needs into ``saved`` (:attr:`saved_blocks` wide)."""
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

    def project_parallel(self, x: Tensor) -> Tensor:
        # without the bias, which GatedScan adds a piece at a time in the cache: addmm would
        # copy it into the whole (T, B, G·H + H) output first, and its backward would sum
        # ∂L/∂b over the whole ∂L/∂pre: two more passes over memory
        return torch.nn.functional.linear(x, self.linear.weight)

    def scan_all(self, pre: Tensor, h0: Tensor, live: Tensor | None, block: int | None) -> Tensor:
        return GatedScan.apply(pre, self.linear.bias, h0, live, block, self)

    def scan_floats(self) -> int:
        return (self.gates + 6) * self.hidden_size  # pre, z, c, h; a, G, dpre in the backward
