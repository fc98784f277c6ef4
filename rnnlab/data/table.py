"""A user's table of numeric sequences (CSV or Parquet), read with pandas and checked.

The table is long format: one row per time step, a time column, numeric columns, and
optionally a series column naming which of several series a row belongs to. Everything a
model reads becomes one float32 array of (rows, channels), the series one after another
(``starts`` holds their row offsets), in the order: targets, past covariates, known columns,
calendar features. Windows and splits are views into that array (:mod:`rnnlab.data.windows`).

Every check runs before any model or run exists and fails with one
:class:`~rnnlab.errors.DataError` naming the column and the first bad row (as a 1-based data
row and, for a CSV, the file line, the header being line 1): a missing file, an unknown
column, a non-numeric value, a missing value (unless ``fill`` is ``ffill`` or
``interpolate``), an unparsable, duplicated or unsorted timestamp.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rnnlab.data.fetch import sha256_of
from rnnlab.errors import DataError

FILLS = ("error", "ffill", "interpolate")
PARQUET = (".parquet", ".pq")
#: calendar features derived from the timestamp, each scaled into [-0.5, 0.5] (Informer's
#: ``timeF`` encoding, which the long-horizon literature uses)
CALENDAR = {
    "hour": (lambda t: t.hour, 23.0),
    "weekday": (lambda t: t.dayofweek, 6.0),
    "day": (lambda t: t.day - 1, 30.0),
    "yearday": (lambda t: t.dayofyear - 1, 365.0),
    "month": (lambda t: t.month - 1, 11.0),
}


@dataclass(frozen=True)
class Columns:
    """Which columns of the table are what (the ``task.*`` keys of a numeric task)."""

    time: str | None
    #: None: every numeric column that is not the time, series, covariate or known column
    targets: tuple[str, ...] | None
    series: str | None = None
    covariates: tuple[str, ...] = ()
    known: tuple[str, ...] = ()
    calendar: bool = False
    fill: str = "error"


@dataclass
class Table:
    """The checked table as one array, and what each part of it is."""

    path: Path
    digest: str
    #: (rows, channels) float32: targets, covariates, known, calendar
    values: np.ndarray
    #: (series + 1,) row offsets: series s is rows starts[s] .. starts[s + 1] - 1
    starts: np.ndarray
    series_ids: list[str]
    targets: list[str]
    covariates: list[str]
    known: list[str]
    #: the calendar features' names (part of the known columns, after them)
    calendar: list[str] = field(default_factory=list)
    #: (rows,) datetime64 timestamps, or None for a table without a time column
    times: np.ndarray | None = None
    #: the time step (pandas frequency string) inferred from the first series
    freq: str | None = None

    @property
    def n_series(self) -> int:
        return len(self.series_ids)

    @property
    def known_all(self) -> list[str]:
        return [*self.known, *self.calendar]

    def lengths(self) -> np.ndarray:
        return np.diff(self.starts)


def read_frame(path: str | os.PathLike, *, header: bool = True) -> tuple[pd.DataFrame, Path]:
    """The file as a DataFrame (Parquet by suffix, else CSV/TSV), or a DataError."""
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        kind = "is a folder, not a file" if resolved.is_dir() else "does not exist"
        raise DataError(
            f"The data file {resolved} {kind}",
            "Check task.data (relative paths are read from the directory rnnlab runs in)",
        )
    try:
        if resolved.suffix.lower() in PARQUET:
            return pd.read_parquet(resolved), resolved
        sep = "\t" if resolved.suffix.lower() == ".tsv" else ","
        return pd.read_csv(resolved, sep=sep, header=0 if header else None), resolved
    except ImportError as exc:
        raise DataError(
            f"Cannot read the Parquet file {resolved}: {exc}",
            "pip install pyarrow, or give the table as CSV",
        ) from exc
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        raise DataError(
            f"Cannot read {resolved} as a table: {type(exc).__name__}: {exc}",
            "Give a CSV with a header line, or a Parquet file",
        ) from exc


def row_name(frame: pd.DataFrame | pd.Series, position: int, path: Path) -> str:
    """The row at ``position`` as the user finds it in the file (the frame's index holds
    each row's 0-based place in the file, kept through the regrouping by series)."""
    index = int(frame.index[position])
    if path.suffix.lower() in PARQUET:
        return f"data row {index + 1} of {path.name}"
    return f"data row {index + 1} (line {index + 2} of {path.name})"


def check_columns(frame: pd.DataFrame, names: list[str], *, key: str, path: Path) -> None:
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise DataError(
            f"{key}: column '{missing[0]}' is not in {path.name} (its columns: "
            f"{', '.join(map(str, frame.columns))})",
            f"Name one of those columns in {key}",
        )


def resolve_targets(frame: pd.DataFrame, cols: Columns, path: Path) -> list[str]:
    """The target columns: as named, or every numeric column not used otherwise."""
    if cols.targets is not None:
        check_columns(frame, list(cols.targets), key="task.target", path=path)
        return list(cols.targets)
    used = {cols.time, cols.series, *cols.covariates, *cols.known}
    found = [c for c in frame.columns if c not in used and pd.api.types.is_numeric_dtype(frame[c])]
    if not found:
        raise DataError(
            f"task.target=all found no numeric column in {path.name}",
            "Name the target columns (task.target=[a,b])",
        )
    return found


def numeric_block(frame: pd.DataFrame, names: list[str], *, key: str, path: Path) -> pd.DataFrame:
    """``names`` as float columns; a DataError naming the first value that is not a number."""
    block = frame[names]
    for name in names:
        column = block[name]
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            continue
        coerced = pd.to_numeric(column, errors="coerce")
        bad = np.flatnonzero(coerced.isna().to_numpy() & column.notna().to_numpy())
        if bad.size:
            row = int(bad[0])
            raise DataError(
                f"{key}: column '{name}' is not numeric: {column.iloc[row]!r} at "
                f"{row_name(frame, row, path)}",
                "Numeric tasks read numbers only; fix or drop that column",
            )
        block = block.assign(**{name: coerced})
    return block.astype(np.float32)  # the array models read: no float64 copy of a big table


def fill_missing(
    block: pd.DataFrame, groups: pd.Series | None, *, fill: str, path: Path
) -> pd.DataFrame:
    """Missing values filled per series as ``fill`` says, or a DataError at the first one."""
    if fill == "ffill":
        block = block.groupby(groups).ffill() if groups is not None else block.ffill()
    elif fill == "interpolate":

        def interpolate(part: pd.DataFrame) -> pd.DataFrame:
            return part.interpolate(method="linear", limit_direction="both")

        block = (
            block.groupby(groups).transform(interpolate)
            if groups is not None
            else interpolate(block)
        )
    missing = block.isna().to_numpy()
    if missing.any():
        row, col = np.argwhere(missing)[0]
        why = "" if fill == "error" else f" (task.fill={fill} cannot fill it: nothing before it)"
        raise DataError(
            f"Missing value in column '{block.columns[col]}' at {row_name(block, int(row), path)}"
            f"{why}",
            "Fill it in the file, or set task.fill=ffill (carry the last value) or "
            "task.fill=interpolate (linear between neighbours)",
        )
    return block


def check_times(times: pd.Series, groups: np.ndarray, *, path: Path) -> None:
    """Timestamps strictly increase within each series: no duplicate, none out of order."""
    values = times.to_numpy()
    same = groups[1:] == groups[:-1]
    step = values[1:] > values[:-1]
    equal = values[1:] == values[:-1]
    for bad, what, fix in (
        (same & equal, "duplicated timestamp", "Drop or aggregate the repeated rows"),
        (same & ~step & ~equal, "timestamp out of order", "Sort the table by time"),
    ):
        found = np.flatnonzero(bad)
        if found.size:
            row = int(found[0]) + 1
            raise DataError(
                f"task.time: {what} {times.iloc[row]} at {row_name(times, row, path)} "
                f"(the row before has {times.iloc[row - 1]})",
                f"{fix} (within each series, if task.series is set)",
            )


def parse_times(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    check_columns(frame, [column], key="task.time", path=path)
    raw = frame[column]
    parsed = pd.to_datetime(raw, errors="coerce")
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if bad.size:
        row = int(bad[0])
        raise DataError(
            f"task.time: column '{column}' holds {raw.iloc[row]!r}, not a timestamp, at "
            f"{row_name(frame, row, path)}",
            "Give a date/time in every row (ISO 8601: 2016-07-01 00:00:00), or task.time=null",
        )
    if parsed.dt.tz is not None:  # one clock for every row: UTC, without the zone
        parsed = parsed.dt.tz_convert(None)
    return parsed


def calendar_features(times: pd.Series) -> tuple[np.ndarray, list[str]]:
    """(rows, 5) float32 calendar features in [-0.5, 0.5] and their names."""
    index = pd.DatetimeIndex(times)
    columns = [
        np.asarray(get(index), dtype=np.float32) / span - 0.5 for get, span in CALENDAR.values()
    ]
    return np.stack(columns, axis=1), [f"calendar.{name}" for name in CALENDAR]


def load_table(path: str | os.PathLike, cols: Columns) -> Table:
    """Read and check ``path`` into one :class:`Table` (see the module docstring)."""
    frame, resolved = read_frame(path)
    if frame.empty:
        raise DataError(f"{resolved} holds no rows", "Give a table with a header line and data")
    if cols.series is not None:
        check_columns(frame, [cols.series], key="task.series", path=resolved)
    if cols.series is not None:  # rows of one series together, in the file's order of series
        codes = pd.factorize(frame[cols.series])[0]
        if (np.diff(codes) < 0).any():  # interleaved: regroup (a copy); together: as it is
            frame = frame.iloc[np.argsort(codes, kind="stable")]
    targets = resolve_targets(frame, cols, resolved)
    check_columns(frame, [*cols.covariates], key="task.covariates", path=resolved)
    check_columns(frame, [*cols.known], key="task.known", path=resolved)
    names = [*targets, *cols.covariates, *cols.known]
    block = numeric_block(frame, names, key="task.target", path=resolved)
    codes, ids = (
        pd.factorize(frame[cols.series])
        if cols.series is not None
        else (np.zeros(len(frame), np.int64), ["all"])
    )
    groups = pd.Series(codes, index=frame.index) if cols.series is not None else None
    block = fill_missing(block, groups, fill=cols.fill, path=resolved)
    values = block.to_numpy(dtype=np.float32)
    if not values.flags.writeable:  # pandas' copy-on-write hands out read-only views
        values = values.copy()
    times = None
    calendar: list[str] = []
    if cols.time is not None:
        parsed = parse_times(frame, cols.time, resolved)
        check_times(parsed, np.asarray(codes), path=resolved)
        times = parsed.to_numpy()
        if cols.calendar:
            features, calendar = calendar_features(parsed)
            values = np.concatenate([values, features], axis=1)
    elif cols.calendar:
        raise DataError(
            "task.calendar=true needs timestamps, and task.time is null",
            "Name the time column (task.time=COL), or set task.calendar=false",
        )
    starts = np.searchsorted(np.asarray(codes), np.arange(len(ids) + 1)).astype(np.int64)
    return Table(
        path=resolved,
        digest=sha256_of(resolved),
        values=np.ascontiguousarray(values),
        starts=starts,
        series_ids=[str(i) for i in ids],
        targets=targets,
        covariates=list(cols.covariates),
        known=list(cols.known),
        calendar=calendar,
        times=times,
        freq=infer_freq(times[starts[0] : starts[1]]) if times is not None else None,
    )


def infer_freq(times: np.ndarray) -> str | None:
    """The series' time step as a pandas frequency, or None when it has no regular step."""
    if len(times) < 3:
        return None
    try:
        return pd.infer_freq(pd.DatetimeIndex(times[:1000]))
    except (TypeError, ValueError):
        return None
