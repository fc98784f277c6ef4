"""Host-to-device copies that never make the host wait for the device.

A batch is built on the host (padding, lengths, index lists) and then moved to the device.
On CUDA a plain ``tensor.to("cuda")`` from ordinary (pageable) memory is a synchronous copy:
the host waits until the GPU has finished every kernel queued before it, so the next step's
kernels cannot be queued while this one runs. Copied from pinned (page-locked) memory with
``non_blocking=True`` it is queued like a kernel, in stream order, and the host goes on.
The caching host allocator keeps the pinned buffer alive until the copy has run, so the
source may be dropped at once. Elsewhere (the CPU) the tensor is simply moved.
"""

from __future__ import annotations

import torch
from torch import Tensor


def pinned(tensor: Tensor, device: torch.device) -> Tensor:
    """``tensor`` (host memory) in pinned memory when it is bound for CUDA, else as it is:
    for host-side values a CUDA step also reads on the device (sequence lengths)."""
    if device.type != "cuda" or tensor.device.type != "cpu" or tensor.is_pinned():
        return tensor
    return tensor.pin_memory()


def to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """``tensor`` on ``device``; a host tensor bound for CUDA travels from pinned memory
    with ``non_blocking=True`` (queued in stream order, no host wait)."""
    if device.type == "cuda" and tensor.device.type == "cpu":
        return pinned(tensor, device).to(device, non_blocking=True)
    return tensor.to(device)
