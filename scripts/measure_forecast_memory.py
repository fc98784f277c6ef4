"""Peak memory of task=forecast on a large generated table (goal: <= 2 GB at 10M x 8).

Writes a Parquet table of ``--rows`` hourly rows and 8 numeric channels (4 series in long
format), then, in a fresh process, reads and checks it, splits and scales it, cuts the
windows and trains ``--batches`` batches of the direct head, and prints that process's peak
resident set size (``ru_maxrss``) with the time each stage took.

    python scripts/measure_forecast_memory.py [--rows 10000000] [--format parquet|csv]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent


def write_table(path: Path, rows: int, channels: int = 8, series: int = 4) -> None:
    per = rows // series
    rng = np.random.default_rng(0)
    t = np.arange(per, dtype=np.float32)
    frames = []
    for s in range(series):
        data = {
            f"c{c}": (np.sin(2 * np.pi * t / 24 + c) + rng.normal(0, 0.1, per)).astype(np.float32)
            for c in range(channels)
        }
        frame = pd.DataFrame({"time": pd.date_range("2000-01-01", periods=per, freq="h"), **data})
        frame.insert(1, "meter", f"m{s}")
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    if path.suffix == ".csv":
        table.to_csv(path, index=False)
    else:
        table.to_parquet(path, index=False)


def measure(path: str, batches: int) -> None:
    """The child process: one task's data and a few training steps; peak RSS."""
    sys.path.insert(0, str(ROOT / "tests"))
    import torch
    from conftest import compose

    from rnnlab.compose import compose as build

    torch.set_num_threads(1)
    start = time.perf_counter()
    overrides = [
        "task=forecast",
        f"task.data={path}",
        "task.time=time",
        "task.series=meter",
        "task.lookback=96",
        "task.horizon=24",
        "cell.hidden_size=32",
        "device=cpu",
    ]
    spec = build(compose(overrides))
    spec.task.prepare()
    prepared = time.perf_counter() - start
    model = spec.task.build_model(stack=spec.stack)
    optimizer = spec.optimizer(model.parameters())
    for i, batch in enumerate(spec.task.train_batches(epoch=1)):
        if i == batches:
            break
        loss, _, _ = spec.task.train_loss(model, batch, None)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB -> GiB
    windows = {k: len(v) for k, v in spec.task.starts.items()}
    print(f"rows {len(spec.task.values)}, windows {windows}")
    print(f"read, checked, split and scaled in {prepared:.1f} s; {batches} training batches after")
    print(f"peak RSS: {peak:.2f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(args.child, args.batches)
        return
    with tempfile.TemporaryDirectory(prefix="forecast-memory-") as tmp:
        path = Path(tmp) / f"table.{args.format}"
        started = time.perf_counter()
        write_table(path, args.rows)
        print(
            f"wrote {args.rows} rows x 8 channels to {path.name} in {time.perf_counter() - started:.1f} s"
        )
        subprocess.run(
            [sys.executable, __file__, "--child", str(path), "--batches", str(args.batches)],
            check=True,
        )


if __name__ == "__main__":
    main()
