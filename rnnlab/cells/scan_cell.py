"""Base of the cells whose recurrence is linear in the state: h_t = a_t ⊙ h_{t-1} + b_t, with
a_t and b_t functions of the input x_t alone (minGRU, minLSTM, LRU).

Because no gate reads h_{t-1}, a whole sequence needs no step-by-step matrix product: the
gates of all T steps are one GEMM (:meth:`ScanCell.project`), their arithmetic one pass
(:meth:`ScanCell.coefficients`), and the recurrence one scan
(:func:`rnnlab.cells.scan.linear_scan`). That is the **parallel** path. The **sequential**
path is the ordinary one-step ``forward(x_t, state)`` (generation, beam search, a decoder's
loop), run by the base class's per-step loop when ``cell.scan=sequential``; both paths call
the same ``project``/``coefficients``/``emit``, so they compute the same function with the
same weights (tests/test_scan_cells.py checks it to 1e-10 in float64).

``cell.scan`` picks the path: ``parallel``, ``sequential``, or ``auto`` (parallel for any
sequence of :data:`AUTO_MIN_STEPS` steps or more; a single step runs ``forward``, which is
what the scan would do for one step, minus its set-up). ``cell.scan_chunk=N`` runs the
parallel path over windows of N steps, the state carried from window to window, and in
training recomputes each window in the backward pass (``torch.utils.checkpoint``): the
memory of one window instead of the whole sequence's. A parallel scan that would not fit in
the device's free memory stops with an error that names the ``cell.scan_chunk`` to use.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from rnnlab.cells.base import Cell, State
from rnnlab.cells.scan import block_size, linear_scan
from rnnlab.errors import ConfigError

#: ``cell.scan=auto`` runs sequences of at least this many steps in parallel (measured:
#: docs/benchmarks.md, "Scan cells")
AUTO_MIN_STEPS = 2
#: the parallel path checks free memory only above this estimate (the check reads /proc)
CHECK_ABOVE_BYTES = 256 << 20
#: on the CPU the parallel path runs windows whose (T, B, N) tensors stay under this size
#: (:meth:`ScanCell.auto_window`; glibc maps blocks above its 32 MiB mmap threshold afresh)
WINDOW_BYTES = 8 << 20
#: and never windows shorter than this (per-window overhead)
MIN_WINDOW = 64


def positive(u: Tensor) -> Tensor:
    """The minGRU paper's g (its appendix B.3): u + ½ for u ≥ 0, σ(u) below; positive,
    continuous, and linear for large u, so candidate states neither vanish nor saturate."""
    return torch.sigmoid(u.clamp(max=0)) + torch.relu(u)


def free_memory(device: torch.device) -> int:
    """Bytes the device can still allocate: CUDA's free memory, else MemAvailable."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def in_state_precision(pre: Tensor, h: Tensor) -> Tensor:
    """Pre-activations in the state's precision. Under bf16 autocast the projection comes out
    in bf16 while the state stays fp32 (as the fused RNNs keep theirs): a recurrence carried
    over thousands of steps in bf16 would drift, and the scan's kernels need one dtype."""
    real = h.real if h.is_complex() else h
    return pre if pre.dtype == real.dtype else pre.to(real.dtype)


class ScanCell(Cell):
    """A cell with a parallel path (module docstring); subclasses implement the hooks."""

    parallel_scan: ClassVar[bool] = True
    #: state tensors per scanned unit: 1 for a real state, 2 for a complex one (re, im)
    state_size: ClassVar[int] = 1

    # -- what a subclass implements -----------------------------------------------------
    def project(self, x: Tensor) -> Tensor:
        """Pre-activations (..., G) of inputs (..., I): every step's in one matmul."""
        raise NotImplementedError

    def coefficients(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        """(a, b) of the recurrence from pre-activations; ``a`` broadcastable to ``b``."""
        raise NotImplementedError

    def emit(self, h: Tensor, x: Tensor) -> Tensor:
        """The output (..., H) from the scanned state (and the input); the state itself here."""
        return h

    def pack(self, state: State) -> Tensor:
        """The scanned state (B, N) from the state tuple."""
        return state[0]

    def unpack(self, h: Tensor) -> State:
        """The state tuple from the scanned state (B, N)."""
        return (h,)

    def scan_floats(self) -> int:
        """Numbers the parallel path keeps per step and sequence (for the memory check)."""
        return 6 * self.hidden_size * self.state_size

    # -- the sequential path --------------------------------------------------------------
    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        return self._advance(self.project(x_t), x_t, state)

    def begin_sequence(self, x: Tensor) -> tuple[Any, Any]:
        return (self.project(x), x), None  # every step's pre-activations at once

    def step(self, p_t: Any, state: State, shared: Any) -> tuple[Tensor, State]:
        pre_t, x_t = p_t
        return self._advance(pre_t, x_t, state)

    def _advance(self, pre_t: Tensor, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        h0 = self.pack(state)
        a, b = self.coefficients(in_state_precision(pre_t, h0))
        h = torch.addcmul(b, a, h0)  # (B, N)
        return self.emit(h, x_t), self.unpack(h)

    # -- the parallel path ----------------------------------------------------------------
    def set_loop_options(self, **options: Any) -> None:
        super().set_loop_options(**options)
        if self.scan == "parallel" and self.zoneout > 0:
            raise ValueError(
                "zoneout is a per-step operation, which the parallel scan does not run: use "
                "cell.scan=sequential (or auto, which then runs the per-step loop) with zoneout"
            )

    @property
    def path(self) -> str:
        if self.scan == "sequential" or self.zoneout > 0:
            return super().path
        return "parallel"

    def uses_parallel(self, steps: int) -> bool:
        """Whether a sequence of ``steps`` steps runs the parallel path (``cell.scan``)."""
        if self.path != "parallel":
            return False
        return self.scan == "parallel" or steps >= AUTO_MIN_STEPS

    def sequence(
        self, x: Tensor, state: State, lengths: Tensor | None = None
    ) -> tuple[Tensor, State]:
        steps = x.shape[0]
        if not self.uses_parallel(steps):
            return super().sequence(x, state, lengths)
        live = None
        if lengths is not None:
            time = torch.arange(steps, device=x.device).unsqueeze(1)  # (T, 1)
            live = (lengths.to(x.device).unsqueeze(0) > time).unsqueeze(-1)  # (T, B, 1)
        if self.scan_chunk is not None and self.scan_chunk < steps:
            return self._windows(x, state, live, self.scan_chunk, recompute=True)
        self.check_memory(steps, x)
        window = self.auto_window(x)
        if window < steps:
            return self._windows(x, state, live, window, recompute=False)
        out, h = self._parallel(x, self.pack(state), live)
        return out, self.unpack(h)

    def auto_window(self, x: Tensor) -> int:
        """Steps per window of the parallel path on the CPU: as many as keep a (T, B, N)
        float tensor under :data:`WINDOW_BYTES`, so glibc recycles them from its heap instead
        of mapping fresh pages (a page fault per 4 KiB, at every pass) for each; a GPU's
        caching allocator has no such cost, so it runs the whole sequence at once."""
        if x.device.type != "cpu":
            return x.shape[0]
        per_step = x.shape[1] * self.hidden_size * self.state_size * x.element_size()
        return max(MIN_WINDOW, WINDOW_BYTES // per_step)

    def _windows(
        self, x: Tensor, state: State, live: Tensor | None, window: int, *, recompute: bool
    ) -> tuple[Tensor, State]:
        """The parallel path over windows of ``window`` steps, the state carried from one to
        the next; with ``recompute``, each is recomputed in the backward pass."""
        h = self.pack(state)
        pieces = []
        masks = [None] * -(-x.shape[0] // window) if live is None else live.split(window)
        for x_w, live_w in zip(x.split(window), masks, strict=True):
            if recompute and torch.is_grad_enabled():
                out, h = checkpoint(self._parallel, x_w, h, live_w, use_reentrant=False)
            else:
                out, h = self._parallel(x_w, h, live_w)
            pieces.append(out)
        return torch.cat(pieces), self.unpack(h)  # (T, B, H)

    def _parallel(self, x: Tensor, h0: Tensor, live: Tensor | None) -> tuple[Tensor, Tensor]:
        """x (T, B, I), h0 (B, N) -> outputs (T, B, H) and the last state (B, N)."""
        block = block_size(x.shape[0], h0.numel(), x.device)
        pre = in_state_precision(self.project_parallel(x), h0)
        h = self.scan_all(pre, h0, live, block)  # (T, B, N)
        out = self.emit(h, x)  # (T, B, H)
        if live is not None:
            out = out * live
        return out, h[-1]

    def project_parallel(self, x: Tensor) -> Tensor:
        """:meth:`project` on the parallel path; a cell whose :meth:`scan_all` applies part of
        the projection itself (the minimal cells' bias) returns the rest."""
        return self.project(x)

    def scan_all(self, pre: Tensor, h0: Tensor, live: Tensor | None, block: int | None) -> Tensor:
        """The state at every step (T, B, N) from every step's pre-activations: the
        :meth:`coefficients` of all steps, then :func:`linear_scan` (a cell may fuse the two:
        :class:`rnnlab.cells.minimal.GatedScan`). ``live`` (T, B, 1) marks real steps."""
        a, b = self.coefficients(pre)  # b: (T, B, N); a broadcastable
        if live is not None:  # padding: a = 1 and b = 0 carry the state through unchanged
            a = torch.where(live, a, torch.ones((), dtype=a.dtype, device=a.device))
            b = torch.where(live, b, torch.zeros((), dtype=b.dtype, device=b.device))
        return linear_scan(a, b, h0, block=block)

    def check_memory(self, steps: int, x: Tensor) -> None:
        """Refuse, naming ``cell.scan_chunk``, a parallel scan that cannot fit in memory."""
        per_step = x.shape[1] * self.scan_floats() * x.element_size()
        need = steps * per_step
        if need < CHECK_ABOVE_BYTES:
            return
        free = free_memory(x.device)
        if need <= free:
            return
        fits = (free // 4) // per_step  # steps in a quarter of it (a window is kept twice)
        window = 1 << (fits.bit_length() - 1) if fits else 1
        raise ConfigError(
            f"The parallel scan of {type(self).__name__} over {steps} steps x {x.shape[1]} "
            f"sequences needs about {need / 2**30:.1f} GiB and {x.device} has "
            f"{free / 2**30:.1f} GiB free",
            f"Set cell.scan_chunk={window} (the scan then runs {window} steps at a time and "
            "recomputes each window in the backward pass), or shorten the sequences "
            "(task.bptt, task.length) or the batch",
        )
