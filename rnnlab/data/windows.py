"""Chronological splits, per-series scaling and forecast windows as views into one array.

Each series is split in time into train, validation and test rows (fractions of its length,
or row counts; rows past the three counts are left out, as the long-horizon protocol leaves
the end of ETTh1 out). A window is ``lookback`` input rows followed by ``horizon`` target
rows, at every start (stride 1). A window belongs to the split its *targets* lie in: a
validation or test window may read its input from the split before it (the convention of
Informer, Autoformer, DLinear, PatchTST and SegRNN, so their tables can be reproduced), but
no window forecasts across a split boundary, and none crosses from one series to the next.

The windows are one strided view, ``values.unfold(0, lookback + horizon, 1)``, of the one
(rows, channels) array: no window is copied out; a batch gathers its windows when it is
drawn. The scaler is fitted per series and channel on that series' training rows only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from rnnlab.errors import ConfigError

SPLITS = ("train", "val", "test")
SCALERS = ("standard", "minmax", "none")


def split_rows(length: int, split: tuple[float, ...]) -> tuple[int, int, int]:
    """(train, val, test) rows of a series of ``length`` rows.

    Fractions (floats summing to at most 1) give train and test as ``int(length · f)`` and
    validation the rows between (Informer's rule for a custom table); whole numbers are row
    counts, taken from the start."""
    if all(float(v).is_integer() and v >= 1 for v in split):
        counts = tuple(int(v) for v in split)
        if sum(counts) > length:
            raise ConfigError(
                f"task.split={list(split)} asks for {sum(counts)} rows, but a series has only "
                f"{length}",
                "Use fewer rows per split, or fractions (task.split=[0.7,0.1,0.2])",
            )
        return counts  # type: ignore[return-value]
    train = int(length * split[0])
    test = int(length * split[2])
    val = int(round(length * sum(split))) - train - test
    return train, val, test


@dataclass(frozen=True)
class Boundaries:
    """Where one series' splits lie: rows [start, train_end), [train_end, val_end),
    [val_end, end) of the one array."""

    series: str
    start: int
    train_end: int
    val_end: int
    end: int

    def rows(self, split: str) -> tuple[int, int]:
        return {
            "train": (self.start, self.train_end),
            "val": (self.train_end, self.val_end),
            "test": (self.val_end, self.end),
        }[split]


def boundaries(
    starts: np.ndarray, series_ids: list[str], split: tuple[float, ...]
) -> list[Boundaries]:
    out = []
    for s, name in enumerate(series_ids):
        begin, stop = int(starts[s]), int(starts[s + 1])
        train, val, test = split_rows(stop - begin, split)
        out.append(
            Boundaries(name, begin, begin + train, begin + train + val, begin + train + val + test)
        )
    return out


def check_lengths(bounds: list[Boundaries], *, lookback: int, horizon: int) -> None:
    """Every series has a training window, and a validation and test split a horizon long."""
    for b in bounds:
        train = b.train_end - b.start
        if train < lookback + horizon:
            raise ConfigError(
                f"task.lookback={lookback} is too long for the training split: series "
                f"'{b.series}' has {train} training rows, and a window needs lookback + "
                f"horizon = {lookback + horizon}",
                "Use a shorter task.lookback or task.horizon, or give training a larger "
                "share (task.split)",
            )
        for split, (lo, hi) in (("validation", b.rows("val")), ("test", b.rows("test"))):
            if hi - lo < horizon:
                raise ConfigError(
                    f"task.horizon={horizon} is longer than the {split} split: series "
                    f"'{b.series}' has {hi - lo} {split} rows",
                    f"Use a task.horizon of at most {hi - lo}, or a larger {split} share "
                    "(task.split)",
                )


def window_starts(bounds: list[Boundaries], split: str, *, lookback: int, horizon: int) -> Tensor:
    """The first input row of every window of ``split`` (int64): its targets lie in the
    split's rows, its input up to ``lookback`` rows before them, within the same series."""
    pieces = []
    for b in bounds:
        lo, hi = b.rows(split)
        first = max(lo, b.start + lookback)  # targets start here at the earliest
        last = hi - horizon  # ... and here at the latest
        if last >= first:
            pieces.append(torch.arange(first - lookback, last - lookback + 1, dtype=torch.long))
    return torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.long)


@dataclass
class Scaler:
    """Per series and channel: scaled = (value - shift) / scale."""

    kind: str
    shift: np.ndarray  # (series, channels) float32
    scale: np.ndarray  # (series, channels) float32

    @classmethod
    def fit(
        cls, values: np.ndarray, bounds: list[Boundaries], *, kind: str, channels: int
    ) -> Scaler:
        """Fitted on each series' training rows of the first ``channels`` channels only
        (the others, calendar features, keep shift 0 and scale 1)."""
        width = values.shape[1]
        shift = np.zeros((len(bounds), width), np.float32)
        scale = np.ones((len(bounds), width), np.float32)
        for s, b in enumerate(bounds):
            train = values[b.start : b.train_end, :channels].astype(np.float64)  # (n, c)
            if kind == "standard":
                shift[s, :channels] = train.mean(0)
                spread = train.std(0)
            elif kind == "minmax":
                shift[s, :channels] = train.min(0)
                spread = train.max(0) - train.min(0)
            else:
                continue
            scale[s, :channels] = np.where(spread > 0, spread, 1.0)  # a constant channel
        return cls(kind, shift, scale)

    def apply(self, values: np.ndarray, starts: np.ndarray) -> None:
        """Scale ``values`` in place, each series with its own parameters."""
        for s in range(len(starts) - 1):
            part = values[starts[s] : starts[s + 1]]
            part -= self.shift[s]
            part /= self.scale[s]

    def invert(self, scaled: Tensor, series: Tensor, channels: slice) -> Tensor:
        """(B, H, c) scaled values of ``channels`` -> original units; ``series`` (B,)."""
        shift = torch.as_tensor(self.shift[:, channels], device=scaled.device)[series]  # (B, c)
        scale = torch.as_tensor(self.scale[:, channels], device=scaled.device)[series]  # (B, c)
        return scaled * scale.unsqueeze(1) + shift.unsqueeze(1)

    def state_dict(self) -> dict:
        """Tensors, not arrays: checkpoints load with ``torch.load(weights_only=True)``."""
        return {
            "kind": self.kind,
            "shift": torch.from_numpy(self.shift),
            "scale": torch.from_numpy(self.scale),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> Scaler:
        return cls(state["kind"], state["shift"].numpy(), state["scale"].numpy())


def window_view(values: Tensor, *, lookback: int, horizon: int) -> Tensor:
    """(rows, C) -> (rows - L - H + 1, C, L + H): every window, as a view (no copy)."""
    return values.unfold(0, lookback + horizon, 1)


def gather(view: Tensor, starts: Tensor) -> Tensor:
    """The windows starting at ``starts`` (b,) as one (b, L + H, C) batch (its own copy)."""
    return view[starts].transpose(1, 2)  # (b, C, L+H) -> (b, L+H, C)


def series_of(starts: Tensor, series_starts: Tensor) -> Tensor:
    """The series each window (by its first input row) belongs to."""
    return torch.searchsorted(series_starts, starts, right=True) - 1
