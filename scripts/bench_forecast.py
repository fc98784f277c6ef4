"""Forecast training throughput: rnnlab's task=forecast against a textbook PyTorch loop on the
same model, side by side in one process.

Both sides train the same model (the same function from the same initial weights; checked
before timing: the two forecast the same batch to 1e-5) on the same generated table with the
shape of ETTh1 (17,420 hourly rows, 7 channels, 12/4/4 split), the same windows (lookback
96, horizon 96, stride 1, all 7 channels in and out), batch size, optimizer (Adam), gradient
clipping and epochs:

* ``rnnlab``: the composed task and its ``fit()`` (rnnlab's training loop): batches gathered
  from one strided view of the scaled array with an index tensor (:mod:`rnnlab.data.windows`),
  rnnlab's own model classes (:mod:`rnnlab.models.forecast`); windows/s as the run logs it;
* ``textbook``: the model written as its authors and tutorials write it (``nn.GRU`` with
  ``batch_first=True``; for SegRNN the reference code of lss-1138/SegRNN,
  ``models/SegRNN.py``, whose parallel decoding repeats each state once per output segment),
  its weights copied from rnnlab's model; a ``torch.utils.data.Dataset`` whose
  ``__getitem__`` slices one window out of the array, a ``DataLoader`` (shuffle, default
  collate, no workers), and the usual ``zero_grad / forward / loss / backward / clip / step``.

Configs: ``segrnn`` is SegRNN's own ETTh1 setting (GRU 512, segments of 24, channels
independent, dropout 0.5, batch 256); ``direct`` a GRU of 64 whose last state a linear map
reads (batch 64), where the per-window data handling weighs most.

Each round runs both sides once in alternating order; the ratio is the median over rounds
of rnnlab's windows/s over the textbook's (the first epoch of each side is a warm-up).

Each round also times the model alone: the textbook model's training step (forward, loss,
backward, clip, optimizer step) repeated on one batch already in memory, with no data
handling at all. Its windows/s over the textbook loop's is the **ceiling**: the most any loop
around that model's kernels can gain over the textbook, whatever it does with the data.

    python scripts/bench_forecast.py [--quick] [--rounds 3] [--epochs 2] [--threads 1]

Last lines: ``RATIO forecast_<config>_vs_textbook=x.xx`` and the ceiling,
``RATIO forecast_<config>_ceiling=x.xx``.
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
from torch import nn

from rnnlab.data.windows import gather

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


def make_table(folder: Path, rows: int, channels: int = 7, freq: str = "h") -> Path:
    """A table of ``channels`` seasonal series with noise, a row every ``freq`` (ETTh1's
    shape by default; ETTm1's with 69,680 rows at ``15min``)."""
    from numeric_data import seasonal

    data = {f"c{c}": seasonal(rows, seed=c, noise=0.3, level=5.0 * c) for c in range(channels)}
    frame = pd.DataFrame({"date": pd.date_range("2016-07-01", periods=rows, freq=freq), **data})
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


def rnnlab_rate(spec, config: str, epochs: int) -> float:
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


class TextbookDirect(nn.Module):
    """A GRU over the lookback, a linear map of its last output to every step and channel."""

    def __init__(self, channels: int, hidden: int, horizon: int):
        super().__init__()
        self.horizon, self.channels = horizon, channels
        self.gru = nn.GRU(channels, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, horizon * channels)

    def forward(self, x):
        out, _ = self.gru(x)  # (B, L, hidden)
        return self.fc(out[:, -1]).view(-1, self.horizon, self.channels)

    def copy_from(self, model) -> None:
        self.gru.load_state_dict(model.rnn.layers[0].rnn.state_dict())
        self.fc.load_state_dict(model.head.state_dict())


class TextbookSegRNN(nn.Module):
    """SegRNN as lss-1138/SegRNN's ``models/SegRNN.py`` writes it (GRU, ``pmf`` decoding,
    channel ids, no RevIN): the final state repeated once per output segment, every
    (series, segment) pair a row of one batch through ``nn.GRU``."""

    def __init__(self, channels: int, d_model: int, seg_len: int, lookback: int, horizon: int,
                 dropout: float):  # fmt: skip
        super().__init__()
        self.enc_in, self.d_model, self.seg_len = channels, d_model, seg_len
        self.pred_len = horizon
        self.seg_num_x, self.seg_num_y = lookback // seg_len, horizon // seg_len
        self.valueEmbedding = nn.Sequential(nn.Linear(seg_len, d_model), nn.ReLU())
        self.rnn = nn.GRU(d_model, d_model, num_layers=1, bias=True, batch_first=True)
        self.pos_emb = nn.Parameter(torch.randn(self.seg_num_y, d_model // 2))
        self.channel_emb = nn.Parameter(torch.randn(channels, d_model // 2))
        self.predict = nn.Sequential(nn.Dropout(dropout), nn.Linear(d_model, seg_len))

    def forward(self, x):
        batch_size = x.size(0)
        seq_last = x[:, -1:, :].detach()
        x = (x - seq_last).permute(0, 2, 1)  # b,c,s
        x = self.valueEmbedding(x.reshape(-1, self.seg_num_x, self.seg_len))  # bc,n,d
        _, hn = self.rnn(x)  # 1,bc,d
        pos_emb = (
            torch.cat(
                [
                    self.pos_emb.unsqueeze(0).repeat(self.enc_in, 1, 1),
                    self.channel_emb.unsqueeze(1).repeat(1, self.seg_num_y, 1),
                ],
                dim=-1,
            )
            .view(-1, 1, self.d_model)
            .repeat(batch_size, 1, 1)
        )  # bcm,1,d
        _, hy = self.rnn(pos_emb, hn.repeat(1, 1, self.seg_num_y).view(1, -1, self.d_model))
        y = self.predict(hy).view(-1, self.enc_in, self.pred_len)  # b,c,s
        return y.permute(0, 2, 1) + seq_last

    def copy_from(self, model) -> None:
        self.valueEmbedding.load_state_dict(model.embed.state_dict())
        self.rnn.load_state_dict(model.rnn.layers[0].rnn.state_dict())
        with torch.no_grad():
            self.pos_emb.copy_(model.position)
            self.channel_emb.copy_(model.channel)
        self.predict[1].load_state_dict(model.head.state_dict())


def textbook_model(spec, config: str) -> nn.Module:
    """The textbook model of ``config`` with the weights of rnnlab's model from the same
    seed; refuses to time anything unless both forecast the same batch."""
    task = spec.task
    torch.manual_seed(0)
    ours = task.build_model(stack=spec.stack)
    o, channels = task.options, task.sizes()["targets"]
    if config == "direct":
        model = TextbookDirect(channels, spec.stack.hidden_sizes[0], o.horizon)
    else:
        model = TextbookSegRNN(
            channels, spec.stack.hidden_sizes[0], o.segment, o.lookback, o.horizon, o.dropout
        )
    model.copy_from(ours)
    past, known, _ = task.split_batch(gather(task.window_view(), task.starts["train"][:8]))
    with torch.no_grad():
        torch.testing.assert_close(
            model.eval()(past), ours.eval()(past, known), atol=1e-5, rtol=1e-4
        )
    return model


def textbook_rate(spec, config: str, epochs: int) -> float:
    """windows/s of the last epoch of a textbook DataLoader loop on the same model."""
    task = spec.task
    o = task.options
    dataset = Windows(task.values.numpy(), task.starts["train"].numpy(), o.lookback, o.horizon)
    loader = torch.utils.data.DataLoader(dataset, batch_size=o.batch_size, shuffle=True)
    model = textbook_model(spec, config)
    optimizer = spec.optimizer(model.parameters())
    clip = spec.trainer.clip_grad_norm
    rate = 0.0
    for _ in range(epochs):
        model.train()
        start, seen = time.perf_counter(), 0
        for x, y in loader:
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            seen += len(x)
        rate = seen / (time.perf_counter() - start)
    return rate


def model_rate(spec, config: str, steps: int) -> float:
    """windows/s of the textbook model's training step alone, on one batch in memory."""
    task = spec.task
    o = task.options
    starts = task.starts["train"][: o.batch_size].numpy()
    dataset = Windows(task.values.numpy(), starts, o.lookback, o.horizon)
    x, y = next(iter(torch.utils.data.DataLoader(dataset, batch_size=o.batch_size)))
    model = textbook_model(spec, config).train()
    optimizer = spec.optimizer(model.parameters())
    clip = spec.trainer.clip_grad_norm

    def step() -> None:
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()

    for _ in range(3):  # warm-up: allocator, oneDNN primitives
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * len(x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3,000 rows, one round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rows", type=int, default=17420)
    parser.add_argument("--configs", default="direct,segrnn")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, both sides")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows, rounds, configs = args.rows, args.rounds, args.configs.split(",")
    if args.quick:
        rows, rounds = 3000, 1
    ratios = {}
    with tempfile.TemporaryDirectory(prefix="bench-forecast-") as tmp:
        table = make_table(Path(tmp), rows)
        for config in configs:
            spec = compose_spec(table, config, rows)
            found, ceilings = [], []
            for r in range(rounds):
                sides = [("rnnlab", rnnlab_rate), ("textbook", textbook_rate)]
                rates = {
                    name: side(spec, config, args.epochs)
                    for name, side in sides[:: 1 if r % 2 == 0 else -1]
                }
                alone = model_rate(spec, config, steps=20 if args.quick else 100)
                found.append(rates["rnnlab"] / rates["textbook"])
                ceilings.append(alone / rates["textbook"])
                print(
                    f"{config} round {r + 1}: rnnlab {rates['rnnlab']:.0f} windows/s, "
                    f"textbook {rates['textbook']:.0f} windows/s, ratio {found[-1]:.2f}; "
                    f"the model alone {alone:.0f} windows/s, ceiling {ceilings[-1]:.2f}",
                    flush=True,
                )
            ratios[config] = (statistics.median(found), statistics.median(ceilings))
    for config, (ratio, ceiling) in ratios.items():
        print(f"RATIO forecast_{config}_vs_textbook={ratio:.2f}")
        print(f"RATIO forecast_{config}_ceiling={ceiling:.2f}")


if __name__ == "__main__":
    main()
