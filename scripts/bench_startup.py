"""``rnnlab train task=bitcount optim=rmsprop`` end to end: the tracking process against
MLflow in the training process, side by side.

Each round runs the real command twice, in alternating order: once as shipped (MLflow's
import, store and writes in a tracking process, rnnlab.session.sidecar) and once with
``RNNLAB_TRACKING_PROCESS=0`` (all of it in the training process, as before). Each side has
its own folder whose store a first, untimed run created, so every timed run opens an existing
store. Wall time is the whole process, interpreter start to exit. Prints both medians and
the ratio (in-process time / tracking-process time: above 1 the tracking process is faster).

    .venv/bin/python scripts/bench_startup.py            # 5 rounds
    .venv/bin/python scripts/bench_startup.py --quick    # 2 rounds
    .venv/bin/python scripts/bench_startup.py --baseline-src ../old/rnnlab-tree
        # the in-process side from another checkout's sources (PYTHONPATH), e.g. a past commit
    .venv/bin/python scripts/bench_startup.py --baseline-src ../old/rnnlab-tree --same-mode
        # both sides with the tracking process: this tree against the other one
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMAND = ["train", "task=bitcount", "optim=rmsprop"]


def rnnlab() -> list[str]:
    exe = Path(sys.executable).with_name("rnnlab")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "rnnlab"]


def one_run(folder: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [*rnnlab(), *COMMAND], cwd=folder, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"rnnlab train failed in {folder}:\n{done.stderr[-3000:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline-src", type=Path, help="rnnlab sources for the other side")
    parser.add_argument(
        "--same-mode",
        action="store_true",
        help="the other side uses the tracking process too (two trees, one mode)",
    )
    args = parser.parse_args()
    rounds = 2 if args.quick else args.rounds
    base = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    other = "baseline" if args.same_mode else "in process"
    sides = {
        "tracking process": {**base, "RNNLAB_TRACKING_PROCESS": "1"},
        other: {**base, "RNNLAB_TRACKING_PROCESS": "1" if args.same_mode else "0"},
    }
    if args.baseline_src is not None:
        src = str(args.baseline_src.resolve())
        sides[other]["PYTHONPATH"] = os.pathsep.join(filter(None, [src, base.get("PYTHONPATH")]))
    root = Path(tempfile.mkdtemp(prefix="rnnlab-bench-startup-"))
    times: dict[str, list[float]] = {side: [] for side in sides}
    try:
        folders = {side: root / f"side{i}" for i, side in enumerate(sides)}
        for side, folder in folders.items():
            folder.mkdir()
            one_run(folder, sides[side])  # creates the store: not timed
        order = list(sides)
        for r in range(rounds):
            for side in order if r % 2 == 0 else order[::-1]:
                times[side].append(one_run(folders[side], sides[side]))
                print(f"round {r + 1}: {side}: {times[side][-1]:.2f} s", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n{'side':<18} {'median':>8}   runs")
    for side, values in times.items():
        runs = ", ".join(f"{v:.2f}" for v in values)
        print(f"{side:<18} {statistics.median(values):>6.2f} s   {runs}")
    ratio = statistics.median(times[other]) / statistics.median(times["tracking process"])
    name = "startup_vs_baseline" if args.same_mode else "startup_tracking_process"
    print(f"\nRATIO {name}={ratio:.2f}")


if __name__ == "__main__":
    main()
