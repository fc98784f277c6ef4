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

``RNNLAB_HOLD=POINT:PATH`` is the other hook, a barrier for the tests of races between
processes: a process reaching :func:`hold_point` ``POINT`` writes ``PATH.<pid>.reached`` and
waits there until ``PATH`` exists. A test can then see who got where first, release them
together, or let a rival try while one holds, without guessing at delays. The points:
``lease.acquired`` (a run's lease is held, nothing written yet) and ``store.open`` (a process
about to open its tracking store, before it reads the store's schema).
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

VAR = "RNNLAB_FAULT"
HOLD_VAR = "RNNLAB_HOLD"
#: a held process gives up (and fails loudly) after this long: a test that never releases
#: it must not leave it waiting for ever
HOLD_LIMIT_S = 600.0
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


def hold_point(name: str) -> None:
    """Wait here until ``RNNLAB_HOLD``'s release file exists, if it names this point."""
    spec = os.environ.get(HOLD_VAR)
    if not spec:
        return
    point, _, path = spec.partition(":")
    if point != name:
        return
    release = Path(path)
    Path(f"{path}.{os.getpid()}.reached").touch()
    deadline = time.monotonic() + HOLD_LIMIT_S
    while not release.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{HOLD_VAR}: {release} was not created within {HOLD_LIMIT_S} s")
        time.sleep(0.01)
