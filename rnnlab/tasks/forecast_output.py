"""What a forecast run hands back: the table of test forecasts, the data of the forecast plot,
and forecasts past the end of a new table (``rnnlab forecast``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from rnnlab.data.table import Columns, Table, load_table
from rnnlab.data.windows import Scaler
from rnnlab.errors import DataError
from rnnlab.tasks.base import ForecastFigure


def row_series(table: Table, rows: np.ndarray) -> np.ndarray:
    """The series index of each row of the one array."""
    return np.searchsorted(table.starts, rows, side="right") - 1


def time_of(table: Table, rows: np.ndarray) -> np.ndarray:
    """The timestamp of each row, or the row's place in its series without a time column."""
    if table.times is not None:
        return table.times[rows]
    return rows - table.starts[row_series(table, rows)]


def forecast_frame(table: Table, layout: dict, arrays: dict, *, lookback: int) -> pd.DataFrame:
    """One row per (window, step): series, the time forecast from (the window's first
    target row), step, time, and per target the actual value and the forecast, in units."""
    starts, forecast, actual = arrays["starts"], arrays["forecast"], arrays["actual"]
    n, horizon = forecast.shape[:2]
    origin = starts + lookback  # (n,) the first target row of each window
    rows = (origin[:, None] + np.arange(horizon)[None, :]).reshape(-1)  # (n·H,)
    frame = {
        "series": np.asarray(layout["series"])[row_series(table, rows)],
        "origin": np.repeat(time_of(table, origin), horizon),
        "step": np.tile(np.arange(1, horizon + 1), n),
        "time": time_of(table, rows),
    }
    for c, name in enumerate(layout["targets"]):
        frame[name] = actual[:, :, c].reshape(-1)  # (n, H) -> (n·H,)
        frame[f"{name}_forecast"] = forecast[:, :, c].reshape(-1)
    return pd.DataFrame(frame)


def forecast_figure(
    table: Table, layout: dict, scaler: Scaler, arrays: dict, *, lookback: int, count: int
) -> ForecastFigure:
    """``count`` test windows spread over the split, of the last target channel (by
    convention the one of interest: ETTh1's oil temperature is its last column)."""
    starts, forecast, actual = arrays["starts"], arrays["forecast"], arrays["actual"]
    channel = len(layout["targets"]) - 1
    picks = np.unique(np.linspace(0, len(starts) - 1, num=min(count, len(starts))).astype(int))
    windows = []
    for i in picks:
        first = int(starts[i])
        rows = np.arange(first, first + lookback)
        series = int(row_series(table, rows[:1])[0])
        past_scaled = torch.from_numpy(table.values[rows, channel].copy()).view(1, -1, 1)
        past = scaler.invert(past_scaled, torch.tensor([series]), slice(channel, channel + 1))
        future_rows = np.arange(first + lookback, first + lookback + actual.shape[1])
        windows.append(
            (
                time_of(table, rows),
                past.view(-1).numpy(),
                time_of(table, future_rows),
                actual[i, :, channel],
                forecast[i, :, channel],
            )
        )
    name = layout["targets"][channel]
    return ForecastFigure(title=f"test forecasts of {name}", channel=name, windows=windows)


def future_times(last: Any, freq: str | None, horizon: int, *, path: Path) -> Any:
    """``horizon`` timestamps after ``last`` at ``freq``; row numbers without a time column."""
    if freq is None:
        raise DataError(
            f"Cannot continue the timestamps of {path.name}: its time steps are not regular "
            "(pandas infers no frequency from them)",
            "Give rows at a regular step (hourly, daily, ...), with no gap",
        )
    return pd.date_range(last, periods=horizon + 1, freq=freq)[1:].to_numpy()


def new_table(path: Path, columns: Columns, layout: dict) -> Table:
    """A new table read as the run read its training table (same targets and columns)."""
    table = load_table(path, columns)
    if table.targets != layout["targets"]:
        raise DataError(
            f"{path.name} has targets {table.targets}, the run was trained on {layout['targets']}",
            "Give a table with the run's target columns",
        )
    unknown = [s for s in table.series_ids if s not in layout["series"]]
    if unknown:
        raise DataError(
            f"Series '{unknown[0]}' of {path.name} is not one the run was trained on "
            "(its scaler is fitted per series)",
            f"Use series the run knows: {', '.join(layout['series'][:10])}",
        )
    return table


def forecast_new(task: Any, model: Any, path: Path) -> pd.DataFrame:
    """Forecasts of the ``horizon`` rows after the end of each series of the table at
    ``path``, from its last ``lookback`` rows, scaled with the run's own scaler; timestamps
    continue at the table's inferred step (row numbers without a time column)."""
    from rnnlab.data.table import calendar_features

    o, layout = task.options, task.layout
    if o.known:
        raise DataError(
            "This run reads known-future columns (task.known), whose future values a table "
            "of past rows does not hold",
            "Forecast with a run trained without task.known (task.calendar=true is fine)",
        )
    columns = Columns(
        o.time, tuple(layout["targets"]), o.series, tuple(o.covariates), (), o.calendar, o.fill
    )
    table = new_table(path, columns, layout)
    short = [
        (s, n) for s, n in zip(table.series_ids, table.lengths(), strict=True) if n < o.lookback
    ]
    if short:
        raise DataError(
            f"Series '{short[0][0]}' of {path.name} has {short[0][1]} rows, fewer than the "
            f"run's lookback of {o.lookback}",
            f"Give at least {o.lookback} rows per series",
        )
    index = [layout["series"].index(s) for s in table.series_ids]
    Scaler(task.scaler.kind, task.scaler.shift[index], task.scaler.scale[index]).apply(
        table.values, table.starts
    )
    ends = table.starts[1:]
    past = np.stack([table.values[e - o.lookback : e] for e in ends])  # (S, L, C)
    times = [
        future_times(table.times[e - 1], table.freq, o.horizon, path=path)
        if table.times is not None
        else None
        for e in ends
    ]
    if o.calendar:
        known = np.stack([calendar_features(pd.Series(t))[0] for t in times])  # (S, H, K)
    else:
        known = np.zeros((len(ends), o.horizon, 0), np.float32)
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(past), torch.from_numpy(known)).float()  # (S, H, T)
    units = task.scaler.invert(pred, torch.tensor(index), slice(0, len(layout["targets"])))
    rows = []
    for s, name in enumerate(table.series_ids):
        steps = np.arange(1, o.horizon + 1)
        part = {"series": name, "step": steps, "time": times[s] if times[s] is not None else steps}
        part.update({t: units[s, :, c].numpy() for c, t in enumerate(layout["targets"])})
        rows.append(pd.DataFrame(part))
    return pd.concat(rows, ignore_index=True)
