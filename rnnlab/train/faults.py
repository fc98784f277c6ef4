"""Fault injection for the crash-safety tests: ``RNNLAB_FAULT=POINT@N`` kills the process
(SIGKILL, no clean-up at all) the ``N``-th time it reaches the named point (default 1).

The points are the steps of writing a checkpoint: ``checkpoint.flush`` (before the metrics
it implies are flushed), ``checkpoint.temp`` (the temp file exists, still empty),
``checkpoint.rename`` (the temp file is written, not yet renamed) and ``checkpoint.renamed``
(the new checkpoint is in place); ``final_evaluation`` (training done, before the best
weights are evaluated), where ``POINT@N:sigterm`` sends SIGTERM instead; and ``train_step``
(the start of every optimizer step), where ``POINT@N:oom`` raises the
``torch.OutOfMemoryError`` a CUDA allocator raises, so the out-of-memory path is tested on
any machine. Unset, each point is one environment lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

VAR = "RNNLAB_FAULT"
_reached: Counter[str] = Counter()


def fault_point(name: str) -> None:
    """Kill this process here if ``RNNLAB_FAULT`` names this point and its count is due."""
    spec = os.environ.get(VAR)
    if not spec:
        return
    point, _, rest = spec.partition("@")
    if point != name:
        return
    count, _, action = rest.partition(":")
    _reached[name] += 1
    if _reached[name] != int(count or 1):
        return
    if action == "oom":
        import torch

        raise torch.OutOfMemoryError(
            f"CUDA out of memory. Tried to allocate 2.00 GiB (injected by {VAR}={spec})"
        )
    os.kill(os.getpid(), signal.SIGTERM if action == "sigterm" else signal.SIGKILL)
