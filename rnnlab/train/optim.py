"""The optimizer for a device: torch's fused kernels on CUDA, where the class has them.

``optim`` is composed into a factory (``functools.partial`` of the class and its keyword
arguments, :mod:`rnnlab.compose.build`). On CUDA, Adam, AdamW and SGD have a ``fused=True``
implementation: one kernel updates every parameter (and keeps the step counter on the
device), where the default ``foreach`` one launches a few kernels per group of tensors.
``optim.fused`` (``null`` in ``conf/optim/adam.yaml`` and ``sgd.yaml``) means "fused on
CUDA"; ``true`` or ``false`` forces it. Other classes (RMSprop) keep torch's default, which is
``foreach`` on CUDA. The run's ``optimizer_impl`` tag says which ran.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch


def fused_available(factory: Callable[..., Any]) -> bool:
    """Whether the optimizer class behind ``factory`` takes ``fused=``."""
    cls = getattr(factory, "func", factory)
    try:
        return "fused" in inspect.signature(cls).parameters
    except (TypeError, ValueError):  # a builtin or a callable without a signature
        return False


def make_optimizer(
    factory: Callable[..., torch.optim.Optimizer],
    params: Iterable[torch.nn.Parameter],
    device: torch.device,
) -> tuple[torch.optim.Optimizer, str]:
    """``(optimizer, implementation)``: fused on CUDA when ``optim.fused`` is unset (null)
    and the class has a fused kernel; the implementation as the ``optimizer_impl`` tag."""
    fused = dict(getattr(factory, "keywords", None) or {}).get("fused")
    if fused is None and device.type == "cuda" and fused_available(factory):
        return factory(params, fused=True), "fused (auto: CUDA)"
    if fused:
        return factory(params), "fused (optim.fused=true)"
    default = "foreach" if device.type == "cuda" else "for-loop"
    return factory(params), f"torch default ({default} on {device.type})"
