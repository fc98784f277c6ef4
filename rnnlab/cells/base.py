"""The Cell interface shared by every recurrent layer, built-in or user-written.

A cell is an ``nn.Module`` with

* ``init_state(batch_size, device) -> tuple[Tensor, ...]``: the zero state, always a tuple
  (``(h,)`` for RNN/GRU, ``(h, c)`` for LSTM, one tensor per inner layer for the gated-feedback
  RNN), so no caller ever asks "is it an LSTM";
* ``forward(x_t, state) -> (h_t, new_state)``: one time step, ``x_t`` of shape (B, I),
  ``h_t`` of shape (B, H). This is all a user's own cell has to write;
* ``sequence(x, state, lengths=None) -> (outputs, state)``: a whole time-major sequence, ``x``
  of shape (T, B, I), outputs (T, B, H). Cells that map onto a fused kernel
  (``nn.RNN``/``nn.LSTM``/``nn.GRU``) override it; every other cell runs the per-step loop here.
  ``lengths`` (B,) lives on the host (CPU; pinned when the model is on CUDA), where
  ``pack_padded_sequence`` wants it: reading it never waits for the device, and a cell that
  needs it on the device copies it there with ``rnnlab.data.transfer.to_device``.

The per-step loop has two optional hooks, so a cell can move work out of the loop:
``begin_sequence(x) -> (per_step, shared)`` runs once per sequence (e.g. the input
projection of all T steps in one matmul, or a weight-drop mask) and ``step(p_t, state, shared)``
runs at every step; by default ``per_step`` is ``x`` and ``step`` calls ``forward``.

The loop runs in one of two ways (:attr:`path`):

* ``stepwise``: a Python loop over time, eager PyTorch;
* ``compiled``: the same loop cut into chunks of ``chunk`` steps, each chunk one
  ``torch.compile`` graph (unrolled; feature sizes static, batch size marked dynamic), so
  the compile cost is paid once per mode (training, evaluation) and a short last batch or
  another batch size does not recompile (batch size 1 does, once: torch specialises size-1
  dimensions); the ``T mod chunk`` leftover steps of a sequence run eagerly.

Zoneout (Krueger et al. 2016) lives here too, since it only needs the state tuple: in training
each state unit keeps its previous value with probability ``zoneout``; in eval the state is the
expectation ``p·old + (1−p)·new``, as in the paper (deterministic, no sampling).

A cell whose ``forward`` accepts leading dimensions that broadcast (``x_t`` of shape (..., I)
and state tensors of shape (..., H), e.g. inputs (M, I) against states (B, 1, H), giving
(B, M, H)) says so with ``broadcasts = True``; a decoder may then run one step for many
inputs from few states without copying the states out (the SegRNN head's parallel decoding).
The built-in cells but the gated-feedback RNN do; a user's cell need not.

Cells also report ``hidden_size``, whether a task should put a linear read-out on top
(``linear_readout``), and ``scalars()``: a few named numbers worth logging per epoch (the
Elman cell's two weights, for instance).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from rnnlab.data.transfer import to_device

State = tuple[Tensor, ...]

#: the values of ``cell.scan``
SCAN_CHOICES = ("auto", "parallel", "sequential")


class Cell(nn.Module):
    """Base class for one recurrent layer; subclasses implement :meth:`forward`."""

    #: whether a sequence-to-one task should add a linear layer on the last hidden state
    linear_readout: ClassVar[bool] = True
    #: number of tensors in the state tuple
    state_size: ClassVar[int] = 1
    #: whether ``forward`` broadcasts leading dimensions of ``x_t`` and the state (see above)
    broadcasts: ClassVar[bool] = False

    def __init__(self, *, input_size: int, hidden_size: int) -> None:
        super().__init__()
        if input_size <= 0 or hidden_size <= 0:
            raise ValueError(
                f"cell sizes must be positive, got input_size={input_size}, hidden_size={hidden_size}"
            )
        self.input_size = input_size
        self.hidden_size = hidden_size

    # -- options set by the stack (not constructor arguments, so user cells need not know them)
    zoneout: float = 0.0
    compiled: bool = False
    chunk: int = 8
    #: ``cell.scan``: auto | parallel | sequential; only cells with a parallel path
    #: (:class:`~rnnlab.cells.scan_cell.ScanCell`) take anything but auto
    scan: str = "auto"
    #: ``cell.scan_chunk``: steps per window of the parallel scan (None: the whole sequence)
    scan_chunk: int | None = None
    #: whether this cell has a parallel path over a whole sequence (``cell.scan``)
    parallel_scan: ClassVar[bool] = False

    def set_loop_options(
        self,
        *,
        zoneout: float = 0.0,
        compiled: bool = False,
        chunk: int = 8,
        scan: str = "auto",
        scan_chunk: int | None = None,
    ) -> None:
        """Zoneout probability, whether the per-step loop is compiled (chunks of ``chunk``),
        and for cells with a parallel path which path runs (``scan``) in what windows."""
        if not 0.0 <= zoneout < 1.0:
            raise ValueError(f"zoneout must be in [0, 1), got {zoneout}")
        if chunk < 1:
            raise ValueError(f"the compile chunk must be a positive number of steps, got {chunk}")
        if scan not in SCAN_CHOICES:
            raise ValueError(f"cell.scan must be one of {', '.join(SCAN_CHOICES)}, got {scan!r}")
        if (scan != "auto" or scan_chunk is not None) and not self.parallel_scan:
            asked = f"cell.scan={scan}" if scan != "auto" else f"cell.scan_chunk={scan_chunk}"
            raise ValueError(
                f"{asked} sets the path of a cell with a parallel scan (mingru, minlstm, lru); "
                f"{type(self).__name__} has none: leave cell.scan=auto and cell.scan_chunk=null"
            )
        if scan_chunk is not None and scan_chunk < 1:
            raise ValueError(
                f"cell.scan_chunk must be a positive number of steps, got {scan_chunk}"
            )
        self.zoneout = float(zoneout)
        self.compiled = bool(compiled)
        self.chunk = int(chunk)
        self.scan = scan
        self.scan_chunk = scan_chunk
        self.__dict__.pop("_compiled_steps", None)

    @property
    def path(self) -> str:
        """Which implementation :meth:`sequence` uses: ``fused``, ``stepwise`` or ``compiled``."""
        return "compiled" if self.compiled else "stepwise"

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The all-zero initial state: ``state_size`` tensors of shape (B, H)."""
        weight = next(self.parameters())
        return tuple(
            torch.zeros(
                batch_size, self.hidden_size, device=device or weight.device, dtype=weight.dtype
            )
            for _ in range(self.state_size)
        )

    def forward(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:  # pragma: no cover
        raise NotImplementedError

    def output(self, state: State) -> Tensor:
        """The output ``h_t`` that a state holds (after zoneout): ``state[0]`` by default."""
        return state[0]

    # -- the per-step loop and its hooks
    def begin_sequence(self, x: Tensor) -> tuple[Tensor | tuple[Tensor, ...], Any]:
        """Work done once per sequence: ``(per_step, shared)``; ``per_step`` is indexed by time."""
        return x, None

    def step(self, p_t: Any, state: State, shared: Any) -> tuple[Tensor, State]:
        """One step from the ``t``-th slice of ``per_step``; by default :meth:`forward`."""
        return self(p_t, state)

    def end_sequence(self, shared: Any, initial: State, outputs: Tensor) -> None:
        """Called with the (T, B, H) outputs after the loop; nothing to do by default."""

    def zone(self, new: State, old: State) -> State:
        """Zoneout of one step: ``new`` with each unit kept at ``old`` (training: with
        probability ``zoneout``; eval: in expectation). The two may broadcast."""
        p = self.zoneout
        if self.training:
            return tuple(
                torch.where(torch.rand_like(n) < p, o, n) for n, o in zip(new, old, strict=True)
            )
        return tuple(p * o + (1 - p) * n for n, o in zip(new, old, strict=True))

    def _steps(
        self, inputs: Any, state: State, shared: Any, live: Tensor | None
    ) -> tuple[Tensor, State]:
        """Run every step of ``inputs`` (time-major); ``live`` (T, B, 1) masks padding."""
        outputs = []
        # unbind, not inputs[t]: its backward stacks the step gradients once, where indexing
        # would allocate a zero (T, B, ...) gradient per step
        if isinstance(inputs, tuple):
            per_step = list(zip(*(p.unbind(0) for p in inputs), strict=True))
        else:
            per_step = inputs.unbind(0)
        for t, p_t in enumerate(per_step):
            h_t, new_state = self.step(p_t, state, shared)
            if self.zoneout > 0:
                new_state = self.zone(new_state, state)
                h_t = self.output(new_state)
            if live is None:
                state = new_state
            else:
                state = tuple(
                    torch.where(live[t], n, o) for n, o in zip(new_state, state, strict=True)
                )
                h_t = h_t * live[t]
            outputs.append(h_t)
        return torch.stack(outputs, dim=0), state  # (T, B, H)

    def __getstate__(self) -> dict[str, Any]:
        """Copies and pickles leave the compiled function behind (it is rebuilt on first use)."""
        state = self.__dict__.copy()
        state.pop("_compiled_steps", None)
        return state

    def _compiled(self):
        """``_steps`` compiled with static feature sizes and a dynamic batch dimension."""
        fn = self.__dict__.get("_compiled_steps")
        if fn is None:
            # every cell shares the code of ``_steps``; dynamo's default of 8 graphs per code
            # object is too few for a stack (layer widths x train/eval x first/later chunk)
            config = torch._dynamo.config
            config.recompile_limit = max(config.recompile_limit, 64)
            fn = torch.compile(self._steps, dynamic=False)
            self.__dict__["_compiled_steps"] = fn
        return fn

    def _run_compiled(
        self, inputs: Any, state: State, shared: Any, live: Tensor | None
    ) -> tuple[Tensor, State]:
        mark = torch._dynamo.maybe_mark_dynamic
        for p in inputs if isinstance(inputs, tuple) else (inputs,):
            mark(p, 1)  # (K, B, ...): batch size is dynamic, so no recompile per batch size
        for s in state:
            mark(s, 0)  # (B, H)
        if live is not None:
            mark(live, 1)  # (K, B, 1)
        return self._compiled()(inputs, state, shared, live)

    def sequence(
        self, x: Tensor, state: State, lengths: Tensor | None = None
    ) -> tuple[Tensor, State]:
        """Run the cell over a time-major sequence ``x`` (T, B, I) -> outputs (T, B, H).

        With ``lengths`` (B,), sequence b only advances for its first ``lengths[b]`` steps:
        its state is carried unchanged through the padding and its padded outputs are 0,
        the same contract as ``pack_padded_sequence`` on the fused path.
        """
        inputs, shared = self.begin_sequence(x)
        live = None
        if lengths is not None:
            steps = torch.arange(x.shape[0], device=x.device).unsqueeze(1)  # (T, 1)
            lengths = to_device(lengths, x.device)  # queued copy: the host does not wait
            live = (lengths.unsqueeze(0) > steps).unsqueeze(-1)  # (T, B, 1)
        if not self.compiled:
            out, final = self._steps(inputs, state, shared, live)
            self.end_sequence(shared, state, out)
            return out, final
        k, initial = self.chunk, state
        pieces = []
        chunks = _split(inputs, k)  # split, not slicing: one gradient concat in the backward
        masks = [None] * len(chunks) if live is None else live.split(k)
        for chunk, mask in zip(chunks, masks, strict=True):
            steps = chunk[0].shape[0] if isinstance(chunk, tuple) else chunk.shape[0]
            run = self._run_compiled if steps == k else self._steps  # the leftover runs eagerly
            out, state = run(chunk, state, shared, mask)
            pieces.append(out)
        out = torch.cat(pieces, dim=0)  # (T, B, H)
        self.end_sequence(shared, initial, out)
        return out, state

    def scalars(self) -> dict[str, float]:
        """Named scalars to log once per epoch; empty for most cells."""
        return {}

    def structural_parameters(self) -> list[nn.Parameter]:
        """Parameters whose initial values are part of the cell's definition (the LRU's
        eigenvalues), which a task's blanket re-initialisation (``task.init_range``) must
        leave alone; none by default."""
        return []


def _split(inputs: Any, k: int) -> list[Any]:
    """Time-major ``inputs`` (a tensor or a tuple of them) in chunks of ``k`` steps."""
    if isinstance(inputs, tuple):
        return list(zip(*(p.split(k) for p in inputs), strict=True))
    return list(inputs.split(k))
