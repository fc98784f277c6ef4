"""Generated numeric tables for the forecasting and classification tests (no download).

The forecasting series are a linear trend plus a daily and a weekly cycle plus Gaussian
noise of deviation ``noise``: the deterministic part is predictable from the past, the noise
is not, so the best possible forecast error is known (an MSE of ``noise``², in units).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

DAY, WEEK = 24, 168


def seasonal(n: int, *, seed: int = 0, noise: float = 0.1, level: float = 10.0) -> np.ndarray:
    """(n,) trend + daily and weekly cycles + noise."""
    t = np.arange(n, dtype=np.float64)
    rng = np.random.default_rng(seed)
    clean = level + 0.002 * t + np.sin(2 * np.pi * t / DAY) + 0.5 * np.sin(2 * np.pi * t / WEEK)
    return clean + rng.normal(0.0, noise, n)


def forecast_frame(
    n: int = 600, *, series: int = 1, seed: int = 0, noise: float = 0.1, start: str = "2024-01-01"
) -> pd.DataFrame:
    """Hourly rows: time, series (when several), y, a second target z, a covariate temp."""
    frames = []
    for s in range(series):
        y = seasonal(n, seed=seed + s, noise=noise, level=10.0 + 5 * s)
        z = seasonal(n, seed=seed + 100 + s, noise=noise, level=-3.0)
        temp = np.random.default_rng(seed + 200 + s).normal(20.0, 2.0, n)
        frame = pd.DataFrame(
            {"time": pd.date_range(start, periods=n, freq="h"), "y": y, "z": z, "temp": temp}
        )
        if series > 1:
            frame.insert(1, "store", f"s{s}")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def write_csv(frame: pd.DataFrame, folder: Path, name: str = "table.csv") -> Path:
    path = folder / name
    frame.to_csv(path, index=False)
    return path


def classification_arrays(
    n: int = 120, *, length: int = 30, classes: int = 3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(n, length) sequences and (n,) integer classes: class k is a sine of frequency k + 1
    with noise, so a recurrent model tells them apart quickly."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    t = np.linspace(0, 2 * np.pi, length)
    phase = rng.uniform(0, 2 * np.pi, n)
    x = np.sin((labels[:, None] + 1) * t[None, :] + phase[:, None])
    return x + rng.normal(0, 0.2, x.shape), labels
