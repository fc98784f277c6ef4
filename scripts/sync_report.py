"""Where a CUDA training step still waits for the device: every synchronising CUDA operation
in a few hundred steps of each task, by the source line that caused it.

``tests/test_sync.py``'s ``gpu`` test fails at the first wait (``set_sync_debug_mode("error")``);
this report runs the same steps under ``"warn"`` and lists them all, split into the loop's
designed reads (sampled steps, epoch ends) and the rest, so one GPU call shows every site to
fix. Without CUDA it trains the same steps on the CPU and says there is nothing to report.

    python scripts/sync_report.py [--tasks bitcount,lm,translate]
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the sync test's tiny corpora and its loop


def site(stack: list[traceback.FrameSummary]) -> str:
    """The innermost rnnlab frame (else the innermost frame) of a warning's stack."""
    frames = [f for f in stack if "/rnnlab/" in f.filename] or stack
    frame = frames[-1]
    return f"{Path(frame.filename).name}:{frame.lineno} {frame.line}"


def report(task: str, folder: Path) -> None:
    import torch
    from test_sync import build_loop, task_overrides

    from rnnlab.train.divergence import DivergenceWatch
    from rnnlab.train.loop import Progress

    cuda = torch.cuda.is_available()
    loop = build_loop(task_overrides(task, folder), "cuda" if cuda else "cpu")
    found: collections.Counter[tuple[str, str]] = collections.Counter()
    reading = {"now": False, "training": False}
    read, epoch = DivergenceWatch.read, loop.train_epoch

    def training_epoch(p, stop):
        reading["training"] = True
        try:
            return epoch(p, stop)
        finally:
            reading["training"] = False

    def designed_read(self, *values):
        reading["now"] = True
        try:
            return read(self, *values)
        finally:
            reading["now"] = False

    def seen(message, category, filename, lineno, file=None, line=None):
        kind = "IN A STEP" if reading["training"] else "evaluation"
        kind = "designed read" if reading["now"] else kind
        found[(kind, site(traceback.extract_stack()[:-1]))] += 1

    DivergenceWatch.read, loop.train_epoch = designed_read, training_epoch
    if cuda:
        torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = seen
        result = loop.run(Progress())
    if cuda:
        torch.cuda.set_sync_debug_mode(0)
    DivergenceWatch.read = read
    where = "cuda" if cuda else "cpu (no CUDA: nothing to report)"
    print(f"== {task}: {result.steps} steps on {where}")
    for (kind, place), count in sorted(found.items()):
        print(f"  {count:6d}  {kind:13s}  {place}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="bitcount,lm,translate")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks.split(","):
            report(task, Path(tmp) / task)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
