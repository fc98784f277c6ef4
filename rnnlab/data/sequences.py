"""Labelled numeric sequences from a file, in the three layouts people keep them in.

* ``long``: one row per time step; ``series`` names the sequence, ``time`` orders its rows,
  the feature columns hold the values and ``label`` the sequence's class (the same on
  every row of a sequence);
* ``wide``: one row per sequence, time along the columns; ``label`` names the label column,
  or gives its position in a headerless file (``label=0``: the UCR archive's ``.tsv``);
* ``ts``: the UCR/UEA ``.ts`` format (``@`` header lines, then one sequence per line,
  dimensions separated by ``:``, the class last).

Sequences may differ in length. Labels are kept as strings (``-1``, ``1``, ``walking``), in
a stable order: numeric when every label is a number, else alphabetical. Every problem is
one :class:`~rnnlab.errors.DataError` naming the file, the sequence or line, and the fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rnnlab.data.table import read_frame
from rnnlab.errors import DataError

FORMATS = ("auto", "long", "wide", "ts")


@dataclass
class Sequences:
    """Sequences of (length, features) float32 values, with their labels (or None)."""

    path: Path
    values: list[np.ndarray]
    labels: list[str] | None
    #: the sequence ids (long format) or their row/line numbers
    ids: list[str]

    def __len__(self) -> int:
        return len(self.values)


def label_order(labels: list[str]) -> list[str]:
    """The distinct labels, numerically sorted when all are numbers, else alphabetically."""
    distinct = sorted(set(labels))
    try:
        return sorted(distinct, key=float)
    except ValueError:
        return distinct


def label_text(value: Any) -> str:
    """A label as text: 1.0 (a float column) reads as 1."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def format_of(path: Path, fmt: str, *, series: str | None) -> str:
    if fmt != "auto":
        return fmt
    if path.suffix.lower() == ".ts":
        return "ts"
    return "long" if series is not None else "wide"


def check_finite(values: np.ndarray, *, path: Path, where: str) -> None:
    if not np.isfinite(values).all():
        raise DataError(
            f"{path.name}: {where} holds a missing or non-finite value",
            "Fill or drop that sequence (classification reads complete sequences)",
        )


def read_ts(path: Path) -> Sequences:
    """The UCR/UEA ``.ts`` format; ``?`` marks a missing value (refused)."""
    values, labels, ids = [], [], []
    has_labels = True
    in_data = False
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                lower = line.lower()
                if lower.startswith("@classlabel"):
                    has_labels = lower.split()[1:2] == ["true"]
                in_data = lower.startswith("@data")
                continue
            parts = line.split(":")
            dims = parts[:-1] if has_labels else parts
            try:
                rows = [np.array(d.split(","), dtype=np.float32) for d in dims]
            except ValueError as exc:
                raise DataError(
                    f"{path.name} line {number}: {exc}",
                    "Every value must be a number; '?' (missing) is not read",
                ) from exc
            if len({len(r) for r in rows}) != 1:
                raise DataError(
                    f"{path.name} line {number}: its dimensions differ in length",
                    "Give every dimension of a sequence the same length",
                )
            values.append(np.stack(rows, axis=1))  # (T, D)
            check_finite(values[-1], path=path, where=f"line {number}")
            labels.append(parts[-1].strip())
            ids.append(f"line {number}")
    if not in_data or not values:
        raise DataError(
            f"{path.name} has no @data section with sequences",
            "Give a .ts file of the UCR/UEA archive",
        )
    return Sequences(path, values, labels if has_labels else None, ids)


def read_wide(path: Path, label: Any, *, required: bool = True) -> Sequences:
    """One row per sequence; ``label``: a column name, or a position in a headerless file
    (None: no labels; a named label column may be absent unless ``required``); trailing
    empty cells shorten a row (variable lengths)."""
    headerless = isinstance(label, int) or label is None and path.suffix.lower() == ".tsv"
    frame, path = read_frame(path, header=not headerless)
    key = label if headerless else str(label)
    if label is not None and not required and key not in frame.columns:
        label = None
    if label is not None:
        if key not in frame.columns:
            raise DataError(
                f"task.label={label} is not a column of {path.name} ({len(frame.columns)} columns)",
                "Name the label column, or give its position in a headerless file (task.label=0)",
            )
        labels = [label_text(v) for v in frame[key]]
        frame = frame.drop(columns=[key])
    values, ids = [], []
    block = frame.apply(pd.to_numeric, errors="coerce").to_numpy(np.float32)
    for row, raw in enumerate(block):
        length = len(raw) - int(np.argmax(~np.isnan(raw[::-1]))) if not np.isnan(raw).all() else 0
        seq = raw[:length]
        check_finite(
            seq, path=path, where=f"row {row + 1} (a value that is not a number, or a gap)"
        )
        if length == 0:
            raise DataError(f"{path.name}: row {row + 1} holds no values", "Drop empty rows")
        values.append(seq[:, None])  # (T, 1)
        ids.append(f"row {row + 1}")
    return Sequences(path, values, labels if label is not None else None, ids)


def read_long(
    path: Path, *, series: str, time: str | None, features: Any, label: Any, required: bool = True
) -> Sequences:
    """One row per time step; sequences by ``series``, ordered by ``time`` (if given); the
    label column may be absent unless ``required``."""
    frame, path = read_frame(path)
    if not required and label is not None and str(label) not in frame.columns:
        label = None
    named = [c for c in (series, time, *([] if label is None else [str(label)])) if c is not None]
    missing = [c for c in named if c not in frame.columns]
    if missing:
        raise DataError(
            f"Column '{missing[0]}' is not in {path.name} (its columns: {', '.join(map(str, frame.columns))})",
            "Fix task.series, task.time or task.label",
        )
    if features == "all":
        features = [
            c for c in frame.columns if c not in named and pd.api.types.is_numeric_dtype(frame[c])
        ]
    if time is not None:
        frame = frame.sort_values([series, time], kind="stable")
    values, labels, ids = [], [], []
    for name, part in frame.groupby(series, sort=False):
        seq = part[list(features)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float32)
        check_finite(seq, path=path, where=f"sequence '{name}'")
        values.append(seq)
        ids.append(str(name))
        if label is not None:
            found = part[str(label)].unique()
            if len(found) != 1:
                raise DataError(
                    f"{path.name}: sequence '{name}' has {len(found)} labels ({', '.join(map(str, found[:3]))})",
                    "Give every row of a sequence the same label",
                )
            labels.append(label_text(found[0]))
    return Sequences(path, values, labels if label is not None else None, ids)


def read_sequences(
    path: str | os.PathLike,
    *,
    fmt: str,
    label: Any,
    series: str | None = None,
    time: str | None = None,
    features: Any = "all",
    required: bool = True,
) -> Sequences:
    """The file's labelled sequences in its layout (``fmt``: auto picks by suffix and keys);
    with ``required=False`` a file without its label column reads as unlabelled."""
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise DataError(
            f"The data file {resolved} does not exist", "Check task.data / task.train / task.test"
        )
    layout = format_of(resolved, fmt, series=series)
    if layout == "ts":
        return read_ts(resolved)
    if layout == "long":
        if series is None:
            raise DataError(
                "The long format needs task.series (the sequence id column)", "Set task.series=COL"
            )
        return read_long(
            resolved, series=series, time=time, features=features, label=label, required=required
        )
    return read_wide(resolved, label, required=required)
