"""Training precision: ``fp32``, ``bf16`` mixed precision through ``torch.autocast``, or
``auto``, which picks bf16 only where it is both faster and harmless.

With ``bf16`` the task's forward pass and loss run under autocast: matrix products (the
recurrent kernels, the decoder) in bfloat16, softmax/cross-entropy and norms in float32, and
parameters, gradients and optimizer state stay float32 (no loss scaling is needed: bfloat16
has float32's range). A state the task carries between windows (PTB's TBPTT hidden state)
leaves autocast as bfloat16 and is carried so; a checkpoint keeps it as it is, so resuming
stays exact. Evaluation always runs in float32, so ``val/*`` and ``test/*`` mean
the same thing whatever the training precision, and ``rnnlab eval`` reproduces them.

``auto``'s three rules (docs/precision.md), in the order they are asked; the first that
says no keeps fp32, and the reason tag names it:

* task: the task declares it tolerates bf16 (``Task.tolerates_bf16``; the default is no).
  Regression to exact weights (bitcount) does not: bf16's 8 significant bits stop them short.
* size: a training step does at least :data:`MIN_BF16_MACS` multiply-adds
  (:func:`step_macs`); a smaller step is bound by overhead, not arithmetic, and cannot gain.
* hardware: a CUDA GPU of compute capability 8.0 or newer (Ampere on) with cuDNN >= 9.13
  (its bf16 LSTM), or a CPU with AMX (the ``amx_bf16`` flag). AVX512-BF16 alone is not
  enough: oneDNN's bf16 LSTM then runs at 0.73x the fp32 textbook loop (measured on a Xeon
  without AMX, docs/benchmarks.md), and some oneDNN builds refuse it outright.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rnnlab.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16")

#: ``auto``'s size rule: bf16 only for a training step of at least this many multiply-adds
#: (:func:`step_macs`). Below it a step is bound by per-op overhead (dispatch, Python, the
#: optimizer), which bf16 does not shrink and autocast's casts add to; docs/precision.md
#: gives the basis (scripts/bench_precision.py) and which presets fall on which side.
MIN_BF16_MACS = 3 * 10**8


#: what oneDNN raises where this CPU has no bfloat16 kernel for an op: the fused LSTM on a
#: CPU without AVX512-BF16 or AMX (``auto`` picks fp32 there; explicit bf16 meets this)
ONEDNN_REFUSED = "could not create a primitive descriptor"


def autocast(precision: str, device: torch.device) -> Any:
    """The context the training forward pass runs in for a resolved ``precision``."""
    if precision == "bf16":
        return bf16_autocast(device)
    if precision != "fp32":  # "auto" must be resolved first (resolve_precision)
        raise ValueError(f"unresolved training precision {precision!r}")
    return contextlib.nullcontext()


@contextlib.contextmanager
def bf16_autocast(device: torch.device) -> Any:
    """bf16 autocast; oneDNN's refusal of a bfloat16 kernel becomes the user's error it is
    (a setting this CPU cannot run), not a traceback from deep in torch."""
    try:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    except RuntimeError as exc:
        if device.type != "cpu" or ONEDNN_REFUSED not in str(exc):
            raise
        raise ConfigError(
            "trainer.precision=bf16: this CPU cannot run a layer of the model in bfloat16 "
            f"(oneDNN: {str(exc).split('. ')[0]}); its fused LSTM needs AVX512-BF16 or AMX",
            "Train in fp32 here: trainer.precision=fp32, or auto, which picks fp32 on this "
            "CPU (a cell whose kernels run in bf16 everywhere, such as cell=rnn_tanh, also "
            "trains in bf16 here)",
        ) from exc


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_amx() -> bool:
    return "amx_bf16" in cpu_flags() or bool(torch.cpu._is_amx_tile_supported())


def cpu_has_avx512_bf16() -> bool:
    return "avx512_bf16" in cpu_flags() or bool(torch.cpu._is_avx512_bf16_supported())


@dataclass(frozen=True)
class Verdict:
    """Whether bf16 is faster than fp32 on a device, and why (a short phrase for a tag)."""

    fast: bool
    reason: str


def bf16_verdict(device: torch.device) -> Verdict:
    """bf16 is fast on CUDA from compute capability 8.0, and on CPUs with AMX only."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if major < 8:
            return Verdict(False, f"CUDA compute capability {major}.{minor} < 8.0")
        cudnn = torch.backends.cudnn.version() or 0
        if cudnn < 91300:  # cuDNN's bf16 LSTM kernels arrived in 9.13
            return Verdict(False, f"cuDNN {cudnn} < 9.13 has no bf16 LSTM")
        return Verdict(True, f"CUDA compute capability {major}.{minor} >= 8.0")
    if device.type != "cpu":
        return Verdict(False, f"no bf16 rule for device type {device.type}")
    if cpu_has_amx():
        return Verdict(True, "CPU with AMX (amx_bf16)")
    if cpu_has_avx512_bf16():
        return Verdict(False, "CPU with AVX512-BF16 but no AMX: bf16 LSTM slower than fp32")
    return Verdict(False, "CPU without native bf16 (no AMX, no AVX512-BF16)")


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 training is faster than fp32 on ``device``'s hardware (auto's hardware rule)."""
    return bf16_verdict(device).fast


@dataclass(frozen=True)
class Workload:
    """What ``auto``'s task and size rules read about one training run."""

    task: str
    #: the task's :attr:`~rnnlab.tasks.base.Task.tolerates_bf16`
    tolerates_bf16: bool
    #: the task's :attr:`~rnnlab.tasks.base.Task.bf16_cost`
    bf16_cost: str
    #: multiply-adds of one training step's forward pass (:func:`step_macs`)
    macs: int


def step_macs(model: torch.nn.Module, positions: int) -> int:
    """Multiply-adds of one training forward pass, estimated as (trainable weights outside
    embedding tables) x (sequence positions per step): each such weight multiplies once per
    position. Embedding lookups do no arithmetic; a table tied to an output layer counts."""
    computing = {  # owned by a module other than an embedding table (tied ones included)
        id(p)
        for m in model.modules()
        if not isinstance(m, torch.nn.Embedding)
        for p in m.parameters(recurse=False)
    }
    weights = {id(p): p.numel() for p in model.parameters() if p.requires_grad}  # tied: once
    return positions * sum(n for key, n in weights.items() if key in computing)


def workload(task: Any, model: torch.nn.Module) -> Workload:
    """The :class:`Workload` of ``task`` (a :class:`~rnnlab.tasks.base.Task`) training ``model``."""
    return Workload(
        task=task.name,
        tolerates_bf16=task.tolerates_bf16,
        bf16_cost=task.bf16_cost,
        macs=step_macs(model, task.step_positions()),
    )


def resolve_precision(requested: str, device: torch.device, work: Workload) -> tuple[str, str]:
    """``(precision, reason)``. ``auto`` becomes bf16 only when all three rules allow it, and
    the reason names the rule that decided: the task tolerates bf16, the step is large enough
    to gain (:data:`MIN_BF16_MACS`), and the hardware runs bf16 faster (:func:`bf16_verdict`).
    The task and size rules come first, so their answer reads the same on every machine."""
    if requested != "auto":
        return requested, "set by trainer.precision"
    if not work.tolerates_bf16:
        return "fp32", f"auto, task rule: task {work.task} needs fp32 (no tolerates_bf16)"
    size = f"{work.macs:.3g} multiply-adds per training step"
    if work.macs < MIN_BF16_MACS:
        return "fp32", (
            f"auto, size rule: {size} < {MIN_BF16_MACS:.0e}, a step bound by overhead, "
            "which bf16 does not shrink"
        )
    verdict = bf16_verdict(device)
    if not verdict.fast:
        return "fp32", f"auto, hardware rule: {verdict.reason}"
    return "bf16", (
        f"auto, all rules: {verdict.reason}; task {work.task} tolerates bf16; "
        f"{size} >= {MIN_BF16_MACS:.0e}"
    )


def precision_warnings(precision: str, device: torch.device, work: Workload) -> list[str]:
    """One warning line per reason an explicit ``trainer.precision=bf16`` is a poor choice:
    the task does not tolerate it (naming what it is expected to cost), the hardware runs
    it slower than fp32. No line for fp32."""
    if precision != "bf16":
        return []
    lines = []
    if not work.tolerates_bf16:
        lines.append(
            f"warning: trainer.precision=bf16 on task {work.task}, which needs fp32: "
            f"{work.bf16_cost}; use trainer.precision=auto or fp32 for its exact result"
        )
    verdict = bf16_verdict(device)
    if not verdict.fast:
        lines.append(
            f"warning: trainer.precision=bf16 on {device} ({verdict.reason}): bf16 runs "
            "emulated or without its fast kernels there and is usually slower than fp32; use "
            "trainer.precision=auto or fp32 here"
        )
    return lines
