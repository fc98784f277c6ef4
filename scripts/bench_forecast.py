"""Forecast training throughput: rnnlab's task=forecast against a textbook PyTorch loop on the
same model, side by side in one process.

Both sides train the same model class (rnnlab's ``SegmentForecaster`` around a fused GRU,
or the ``direct`` head), built from the same seed, on the same generated table with the
shape of ETTh1 (17,420 hourly rows, 7 channels), the same windows (lookback 96, horizon
96, stride 1), batch size, optimizer and epochs:

* ``rnnlab``: the composed task and its ``fit()``: batches gathered from one strided view
  of the scaled array (:mod:`rnnlab.data.windows`), windows/s as the run logs it;
* ``textbook``: a ``torch.utils.data.Dataset`` whose ``__getitem__`` slices one window out
  of the array, a ``DataLoader`` (shuffle, default collate, no workers), and the usual
  ``zero_grad / forward / loss / backward / step`` loop.

Each round runs both sides once in alternating order; the ratio is the median over rounds
of rnnlab's windows/s over the textbook's (the first epoch of each side is a warm-up).

    python scripts/bench_forecast.py [--quick] [--rounds 3] [--epochs 2]

Last lines: ``RATIO forecast_<config>_vs_textbook=x.xx``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

CONFIGS = {
    # SegRNN's own ETTh1 settings (scripts/SegRNN/Lookback_96/etth1.sh)
    "segrnn": [
        "task.model=segment",
        "cell.hidden_size=512",
        "task.batch_size=256",
        "task.dropout=0.5",
    ],
    # a small direct model: where the per-window data handling shows
    "direct": ["task.model=direct", "cell.hidden_size=64", "task.batch_size=64"],
}


def make_table(folder: Path, rows: int, channels: int = 7) -> Path:
    """An hourly table of ``channels`` seasonal series with noise (ETTh1's shape)."""
    from numeric_data import seasonal

    data = {f"c{c}": seasonal(rows, seed=c, noise=0.3, level=5.0 * c) for c in range(channels)}
    frame = pd.DataFrame({"date": pd.date_range("2016-07-01", periods=rows, freq="h"), **data})
    path = folder / "table.csv"
    frame.to_csv(path, index=False)
    return path


def compose_spec(table: Path, config: str, rows: int):
    from conftest import compose

    from rnnlab.compose import compose as build

    train = int(rows * 12 / 20)
    split = f"[{train},{int(rows * 4 / 20)},{int(rows * 4 / 20)}]"
    overrides = [
        "task=forecast",
        f"task.data={table}",
        "task.time=date",
        f"task.split={split}",
        "task.lookback=96",
        "task.horizon=96",
        "trainer.progress=false",
        "device=cpu",
        *CONFIGS[config],
    ]
    spec = build(compose(overrides))
    spec.task.prepare()
    return spec


class NullRecorder:
    """Training's Recorder protocol, writing nowhere (the bench measures training only)."""

    def log_metrics(self, metrics, *, step):
        return None

    def set_tags(self, tags):
        return None

    def write_checkpoint(self, name, write):
        return None


def rnnlab_rate(spec, epochs: int) -> float:
    """windows/s of the last epoch of rnnlab's own loop."""
    from dataclasses import replace

    from rnnlab.train.loop import fit

    torch.manual_seed(0)
    model = spec.task.build_model(stack=spec.stack)
    settings = replace(spec.trainer, max_epochs=epochs, eval_every=10**6, precision="fp32")
    spec.task.evaluate = lambda model, split: _no_eval(split)  # training throughput only
    result = fit(
        model=model,
        task=spec.task,
        optimizer=spec.optimizer(model.parameters()),
        scheduler=None,
        settings=settings,
        recorder=NullRecorder(),
    )
    return result.history["windows_per_s"][-1][1]


def _no_eval(split):
    from rnnlab.tasks.base import EvalResult

    return EvalResult({})


class Windows(torch.utils.data.Dataset):
    """The textbook dataset: one window sliced out per item."""

    def __init__(self, values: np.ndarray, starts: np.ndarray, lookback: int, horizon: int):
        self.values, self.starts = values, starts
        self.lookback, self.horizon = lookback, horizon

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i):
        s = self.starts[i]
        x = self.values[s : s + self.lookback]
        y = self.values[s + self.lookback : s + self.lookback + self.horizon]
        return torch.from_numpy(x), torch.from_numpy(y)


def textbook_rate(spec, epochs: int) -> float:
    """windows/s of the last epoch of a textbook DataLoader loop on the same model."""
    task = spec.task
    values = task.values.numpy()
    dataset = Windows(values, task.starts["train"].numpy(), 96, 96)
    batch = task.options.batch_size
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True)
    torch.manual_seed(0)
    model = task.build_model(stack=spec.stack)
    optimizer = spec.optimizer(model.parameters())
    no_known = torch.zeros(batch, 96, 0)
    rate = 0.0
    for _ in range(epochs):
        model.train()
        start, seen = time.perf_counter(), 0
        for x, y in loader:
            optimizer.zero_grad()
            pred = model(x, no_known[: len(x)], y)
            loss = torch.nn.functional.mse_loss(pred, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            seen += len(x)
        rate = seen / (time.perf_counter() - start)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rows, one round, direct only")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rows", type=int, default=17420)
    parser.add_argument("--configs", default="direct,segrnn")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, both sides")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows, rounds, configs = args.rows, args.rounds, args.configs.split(",")
    if args.quick:
        rows, rounds, configs = 3000, 1, ["direct"]
    ratios = {}
    with tempfile.TemporaryDirectory(prefix="bench-forecast-") as tmp:
        table = make_table(Path(tmp), rows)
        for config in configs:
            spec = compose_spec(table, config, rows)
            found = []
            for r in range(rounds):
                sides = [("rnnlab", rnnlab_rate), ("textbook", textbook_rate)]
                rates = {
                    name: side(spec, args.epochs)
                    for name, side in sides[:: 1 if r % 2 == 0 else -1]
                }
                found.append(rates["rnnlab"] / rates["textbook"])
                print(
                    f"{config} round {r + 1}: rnnlab {rates['rnnlab']:.0f} windows/s, "
                    f"textbook {rates['textbook']:.0f} windows/s, ratio {found[-1]:.2f}",
                    flush=True,
                )
            ratios[config] = statistics.median(found)
    for config, ratio in ratios.items():
        print(f"RATIO forecast_{config}_vs_textbook={ratio:.2f}")


if __name__ == "__main__":
    main()
