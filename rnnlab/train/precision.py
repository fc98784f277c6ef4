"""Training precision: ``fp32``, or ``bf16`` mixed precision through ``torch.autocast``.

With ``bf16`` the task's forward pass and loss run under autocast: matrix products (the
recurrent kernels, the decoder) in bfloat16, softmax/cross-entropy and norms in float32, and
parameters, gradients and optimizer state stay float32 (no loss scaling is needed: bfloat16
has float32's range). A state the task carries between windows (PTB's TBPTT hidden state)
leaves autocast as bfloat16 and is carried so; a checkpoint keeps it as it is, so resuming
stays exact. Evaluation always runs in float32, so ``val/*`` and ``test/*`` mean
the same thing whatever the training precision, and ``rnnlab eval`` reproduces them.

bfloat16 pays off where the hardware has it natively: CPUs with AVX512-BF16 or AMX, and
CUDA GPUs from Ampere on. Elsewhere it is emulated and usually slower than float32.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

PRECISIONS = ("fp32", "bf16")


def autocast(precision: str, device: torch.device) -> Any:
    """The context the training forward pass runs in for ``precision``."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 matrix products in hardware."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def precision_warning(precision: str, device: torch.device) -> str | None:
    """A one-line warning when ``precision`` will run emulated on ``device``, else None."""
    if precision != "bf16" or native_bf16(device):
        return None
    return (
        f"warning: trainer.precision=bf16 on {device}, which has no native bfloat16 "
        "(AVX512-BF16/AMX on a CPU, Ampere or newer on a GPU): it runs emulated and is "
        "usually slower than fp32; use trainer.precision=fp32 here"
    )
