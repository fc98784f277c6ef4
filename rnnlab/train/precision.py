"""Training precision: ``fp32``, ``bf16`` mixed precision through ``torch.autocast``, or
``auto``, which picks bf16 only where it is faster for these models on this device.

With ``bf16`` the task's forward pass and loss run under autocast: matrix products (the
recurrent kernels, the decoder) in bfloat16, softmax/cross-entropy and norms in float32, and
parameters, gradients and optimizer state stay float32 (no loss scaling is needed: bfloat16
has float32's range). A state the task carries between windows (PTB's TBPTT hidden state)
leaves autocast as bfloat16 and is carried so; a checkpoint keeps it as it is, so resuming
stays exact. Evaluation always runs in float32, so ``val/*`` and ``test/*`` mean
the same thing whatever the training precision, and ``rnnlab eval`` reproduces them.

Where bf16 pays (``auto``'s rule, docs/precision.md): a CUDA GPU of compute capability 8.0
or newer (Ampere on) with cuDNN >= 9.13 (its bf16 LSTM), or a CPU with AMX (the ``amx_bf16`` flag). AVX512-BF16 alone is not
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

PRECISIONS = ("auto", "fp32", "bf16")


def autocast(precision: str, device: torch.device) -> Any:
    """The context the training forward pass runs in for a resolved ``precision``."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision != "fp32":  # "auto" must be resolved first (resolve_precision)
        raise ValueError(f"unresolved training precision {precision!r}")
    return contextlib.nullcontext()


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
    """Whether bf16 training is faster than fp32 on ``device`` (``auto`` picks it)."""
    return bf16_verdict(device).fast


def resolve_precision(requested: str, device: torch.device) -> tuple[str, str]:
    """``(precision, reason)``: ``auto`` becomes fp32 or bf16 by :func:`bf16_verdict`."""
    if requested != "auto":
        return requested, "set by trainer.precision"
    verdict = bf16_verdict(device)
    return ("bf16" if verdict.fast else "fp32"), f"auto: {verdict.reason}"


def precision_warning(precision: str, device: torch.device) -> str | None:
    """A one-line warning when ``precision`` is bf16 where it is slower than fp32, else None."""
    verdict = bf16_verdict(device)
    if precision != "bf16" or verdict.fast:
        return None
    return (
        f"warning: trainer.precision=bf16 on {device} ({verdict.reason}): bf16 runs emulated "
        "or without its fast kernels there and is usually slower than fp32; use "
        "trainer.precision=auto or fp32 here"
    )
