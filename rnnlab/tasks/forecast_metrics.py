"""Forecast errors summed over every window of a split, and the baselines beside the model.

Sums are kept in float64 on the device and read once at the end, so a split of millions of
windows costs one synchronisation. Definitions (``e`` = forecast − actual, over every window,
step and target channel):

* ``mse``, ``mae``: mean e², mean |e| on the scaled values (the long-horizon convention);
* ``mae_units``, ``rmse_units``: the same in the table's own units;
* ``smape``: mean 200·|e| / (|actual| + |forecast|), in percent (terms where both are 0 are 0);
* ``mase``: mean |e| / the in-sample MAE of the naive (or seasonal-naive, ``task.season``)
  one-step forecast on the series' training rows, per series and channel (Hyndman & Koehler
  2006); a constant training channel gets scale 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

BASELINES = ("naive", "seasonal", "mean")


def mase_scale(targets: np.ndarray, bounds, *, season: int) -> np.ndarray:
    """(series, T): the mean |y_t − y_{t−season}| over each series' training rows."""
    out = np.ones((len(bounds), targets.shape[1]), np.float64)
    for s, b in enumerate(bounds):
        train = targets[b.start : b.train_end].astype(np.float64)  # (n, T)
        if len(train) > season:
            scale = np.abs(train[season:] - train[:-season]).mean(0)
            out[s] = np.where(scale > 0, scale, 1.0)
    return out


def baselines(past: Tensor, horizon: int, season: int | None) -> dict[str, Tensor]:
    """Forecasts from the lookback alone, (b, H, T) each: the last value, the lookback's
    mean, and (with ``season``) the value one season before each step."""
    b, lookback, t = past.shape
    out = {
        "naive": past[:, -1:].expand(b, horizon, t),
        "mean": past.mean(1, keepdim=True).expand(b, horizon, t),
    }
    if season is not None:
        steps = torch.arange(horizon, device=past.device)
        out["seasonal"] = past[:, lookback - season + steps % season]  # (b, H, T)
    return out


@dataclass
class ErrorSums:
    """Running sums of one split's errors."""

    season: int | None
    sums: dict[str, Tensor] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, key: str, value: Tensor, count: int) -> None:
        total = value.double().sum()
        self.sums[key] = self.sums[key] + total if key in self.sums else total
        self.counts[key] = self.counts.get(key, 0) + count

    def add_scaled(self, pred: Tensor, target: Tensor) -> None:
        err = pred - target
        self.add("mse", err * err, err.numel())
        self.add("mae", err.abs(), err.numel())

    def add_units(self, pred: Tensor, target: Tensor, mase_scale: Tensor) -> None:
        """Errors in the table's units; ``mase_scale`` (b, T) per window's series."""
        err = pred - target
        n = err.numel()
        self.add("mae_units", err.abs(), n)
        self.add("rmse_units", err * err, n)
        denom = pred.abs() + target.abs()
        self.add("smape", torch.where(denom > 0, 200 * err.abs() / denom.clamp_min(1e-12), 0.0), n)
        self.add("mase", err.abs() / mase_scale.unsqueeze(1), n)

    def add_baselines(self, forecasts: dict[str, Tensor], target: Tensor) -> None:
        for name, pred in forecasts.items():
            err = pred - target
            self.add(f"baseline/{name}_mse", err * err, err.numel())
            self.add(f"baseline/{name}_mae", err.abs(), err.numel())

    def metrics(self, split: str, *, loss: str) -> dict[str, float]:
        means = {k: (v / max(self.counts[k], 1)).item() for k, v in self.sums.items()}
        if "rmse_units" in means:
            means["rmse_units"] = means["rmse_units"] ** 0.5
        out = {f"{split}/loss": means[loss]}
        out.update({f"{split}/{k}": v for k, v in means.items()})
        return out
