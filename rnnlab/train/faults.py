"""Fault injection for the crash-safety and concurrency tests: ``RNNLAB_FAULT=POINT@N`` kills
the process (SIGKILL, no clean-up at all) the ``N``-th time it reaches the named point
(default 1).

The points are the steps of writing a checkpoint: ``checkpoint.flush`` (before the metrics
it implies are flushed), ``checkpoint.temp`` (the temp file exists, still empty),
``checkpoint.rename`` (the temp file is written, not yet renamed) and ``checkpoint.renamed``
(the new checkpoint is in place); ``final_evaluation`` (training done, before the best
weights are evaluated), where ``POINT@N:sigterm`` sends SIGTERM instead; and ``store.open``
(a process about to open its tracking store, before it looks at the store's schema).

``POINT@N:barrier:K:DIR`` stops there instead: the process leaves a file in ``DIR`` and waits
until ``K`` processes have, so that ``K`` processes go on from that point together (the
tests that start several processes on one new store). Unset, each point is one environment
lookup.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

VAR = "RNNLAB_FAULT"
#: a barrier whose other parties have not all come by then is a broken test, not a wait
BARRIER_TIMEOUT_S = 300.0
_reached: Counter[str] = Counter()


def fault_point(name: str) -> None:
    """Kill this process here (or wait at a barrier) if ``RNNLAB_FAULT`` names this point and
    its count is due."""
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
    if action.startswith("barrier:"):
        parties, _, folder = action.removeprefix("barrier:").partition(":")
        barrier(Path(folder), int(parties))
    else:
        os.kill(os.getpid(), signal.SIGTERM if action == "sigterm" else signal.SIGKILL)


def barrier(folder: Path, parties: int) -> None:
    """Arrive in ``folder`` and wait until ``parties`` processes have arrived there."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{os.getpid()}.arrived").touch()
    deadline = time.monotonic() + BARRIER_TIMEOUT_S
    while sum(1 for _ in folder.glob("*.arrived")) < parties:
        if time.monotonic() > deadline:
            raise RuntimeError(f"barrier {folder}: fewer than {parties} processes arrived")
        time.sleep(0.01)  # released within 10 ms of the last arrival
