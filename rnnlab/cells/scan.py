"""The first-order linear scan h_t = a_t ⊙ h_{t-1} + b_t over time, forward and backward.

This is the recurrence every scan cell reduces to (minGRU, minLSTM: real ``a = 1 − z``; LRU:
complex ``a = λ``), once its gates have been computed for all T steps from the inputs alone.
:func:`linear_scan` runs it as one autograd node whose backward is the same scan run
backwards in time (the adjoint of a linear recurrence is a linear recurrence):

    G_t = ∂L/∂h_t + conj(a_{t+1}) ⊙ G_{t+1},   ∂L/∂b_t = G_t,   ∂L/∂a_t = G_t ⊙ conj(h_{t-1})

so autograd records nothing per step, and the memory kept for the backward is a, h and h_0.
The numbers are those of the step-by-step recurrence: products of the a_t themselves, never a
division by a cumulative product, so long sequences stay exact (the reason the minGRU paper's
appendix moves to log space does not arise).

Two kernels compute the same scan:

* ``loop``: one fused multiply-add per step over all (B, N) lanes at once, written in place;
* ``blocked`` (a chunked scan): the sequence is cut into K blocks of ``block`` steps; all
  blocks are scanned at once from zero (``block`` steps over K·B·N lanes), the K block ends
  are scanned (recursively) for the state each block starts from, and each block is fixed up
  by adding ``cumprod(a) ⊙ start``. It takes about 2·√T steps instead of T, each on more
  lanes, for three more passes over memory.

:func:`block_size` picks between them from what was measured on each device
(docs/benchmarks.md, "Scan cells"): per-step overhead dominates when a step has few lanes,
memory passes when it has many.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: CPU: below this many lanes (batch × state units) a step is cheaper than its Python and
#: dispatch overhead, so the blocked kernel's fewer, wider steps win (measured 3–4× at
#: 640 lanes, T = 1000); above it the loop's single pass over memory wins (2× at 4096)
CPU_BLOCKED_LANES = 2048
#: steps per block: 8 to 64 measured alike on the CPU; 32 ≈ √1024 on a GPU (launch-bound)
CPU_BLOCK, CUDA_BLOCK = 16, 32


def block_size(steps: int, lanes: int, device: torch.device) -> int | None:
    """The block length for the blocked kernel, or None for the loop (see module docstring)."""
    if device.type == "cuda":
        return CUDA_BLOCK if steps > 2 * CUDA_BLOCK else None
    if lanes <= CPU_BLOCKED_LANES and steps > 4 * CPU_BLOCK:
        return CPU_BLOCK
    return None


def scan_loop(a: Tensor, b: Tensor, h0: Tensor, out: Tensor) -> Tensor:
    """h_t = a_t h_{t-1} + b_t for every t of ``out`` (T, ...), in place; ``out``."""
    h = h0
    # every step's views at once (:func:`rnnlab.cells.minimal.lerp_steps` says why)
    for a_t, b_t, out_t in zip(a.unbind(0), b.unbind(0), out.unbind(0), strict=True):
        h = torch.addcmul(b_t, a_t, h, out=out_t)
    return out


def scan_blocked(a: Tensor, b: Tensor, h0: Tensor, block: int) -> Tensor:
    """The same scan in blocks of ``block`` steps (module docstring); a new (T, ...) tensor."""
    steps = b.shape[0]
    out = torch.empty_like(b)
    if steps <= block:
        return scan_loop(a, b, h0, out)
    count = steps // block
    main = count * block
    lanes = b.shape[1:]
    a3 = a[:main].reshape(count, block, *lanes)  # (K, C, ...): a view unless a is broadcast
    b3 = b[:main].view(count, block, *lanes)
    h3 = out[:main].view(count, block, *lanes)
    h3[:, 0] = b3[:, 0]  # every block scanned from a zero state, all blocks at once
    a_j, b_j, h_j = a3.unbind(1), b3.unbind(1), h3.unbind(1)  # each (K, ...): views
    for j in range(1, block):
        torch.addcmul(b_j[j], a_j[j], h_j[j - 1], out=h_j[j])
    decay = a3.cumprod(1)  # (K, C, ...): a_{kC} ... a_{kC+j}, products only (no division)
    ends = scan_blocked(decay[:, -1], h3[:, -1].clone(), h0, block)  # (K, ...) true block ends
    starts = torch.cat([h0.unsqueeze(0), ends[:-1]])  # (K, ...) the state each block starts from
    h3.addcmul_(decay, starts.unsqueeze(1))
    if main < steps:  # the last T mod C steps, from the last block's end
        scan_loop(a[main:], b[main:], ends[-1], out[main:])
    return out


def scan(a: Tensor, b: Tensor, h0: Tensor, block: int | None) -> Tensor:
    """Forward scan with the kernel ``block`` names (None: the loop)."""
    if block is None:
        return scan_loop(a, b, h0, torch.empty_like(b))
    return scan_blocked(a, b, h0, block)


def scan_adjoint(a: Tensor, grad: Tensor, block: int | None) -> Tensor:
    """G_t = grad_t + conj(a_{t+1}) G_{t+1}, G_{T-1} = grad_{T-1}: the backward scan."""
    steps = grad.shape[0]
    a = conjugate(a)
    if block is None:
        out = torch.empty_like(grad)
        a_s, grad_s, out_s = a.unbind(0), grad.unbind(0), out.unbind(0)  # views (scan_loop)
        g = out_s[steps - 1]
        g.copy_(grad_s[steps - 1])
        for t in range(steps - 2, -1, -1):
            g = torch.addcmul(grad_s[t], a_s[t + 1], g, out=out_s[t])
        return out
    # the blocked kernel runs forwards: reverse time (copies), with a shifted by one step
    a_next = torch.cat([a[1:], torch.zeros_like(a[:1])]).flip(0)
    zero = torch.zeros_like(grad[0])
    return scan_blocked(a_next, grad.flip(0), zero, block).flip(0)


def conjugate(a: Tensor) -> Tensor:
    """conj(a), computed once (a lazy conjugate would be resolved again at every step), and
    for an ``a`` constant over time (stride 0) on one step's worth of numbers only."""
    if not a.is_complex():
        return a
    if a.stride(0) == 0:
        return torch.conj_physical(a[0]).expand_as(a)
    return torch.conj_physical(a)


class LinearScan(torch.autograd.Function):
    """h = scan(a, b, h0) as one autograd node (module docstring for the backward)."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, h0: Tensor, block: int | None) -> Tensor:
        h = scan(a, b, h0, block)
        ctx.save_for_backward(a, h, h0)
        ctx.block = block
        return h

    @staticmethod
    def backward(ctx, grad_h: Tensor) -> tuple[Tensor | None, ...]:
        a, h, h0 = ctx.saved_tensors
        need_a, need_b, need_h0, _ = ctx.needs_input_grad
        g = scan_adjoint(a, grad_h.contiguous(), ctx.block)  # (T, ...)
        grad_a = grad_h0 = None
        if need_a:
            h_prev = torch.cat([h0.unsqueeze(0), h[:-1]])  # (T, ...)
            grad_a = g * h_prev.conj()
        if need_h0:
            grad_h0 = a[0].conj() * g[0]
        return grad_a, g if need_b else None, grad_h0, None


def linear_scan(a: Tensor, b: Tensor, h0: Tensor, *, block: int | None = None) -> Tensor:
    """h_t = a_t ⊙ h_{t-1} + b_t for t = 0..T-1 from ``h0``; ``b`` (T, ...), ``a``
    broadcastable to it (a per-unit constant such as the LRU's λ broadcasts), ``h0`` the
    shape of one step. Real or complex; ``block`` picks the kernel (:func:`block_size`)."""
    a = a.expand_as(b)  # a view: a constant a costs no memory
    return LinearScan.apply(a, b.contiguous(), h0, block)
