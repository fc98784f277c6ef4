"""The published reference beside each run in ``rnnlab runs``: a ``reference`` column from
the run's ``reference.*`` tags, and (``--vs-reference``) the result's relative difference."""

from __future__ import annotations

import math

import pandas as pd

from rnnlab.compose.reference import relative_difference

TAG = "tags.reference."


def reference_text(row: pd.Series) -> str | None:
    metric, value = row.get(f"{TAG}metric"), row.get(f"{TAG}value")
    if not isinstance(metric, str) or not isinstance(value, str):
        return None
    return f"{metric} {value} ({row.get(f'{TAG}source')})"


def difference_text(row: pd.Series) -> str | None:
    """``-2.1%``: the run's final value of the reference metric against the reference."""
    metric, value = row.get(f"{TAG}metric"), row.get(f"{TAG}value")
    if not isinstance(metric, str) or not isinstance(value, str):
        return None
    result = row.get(f"metrics.{metric}")
    if result is None or (isinstance(result, float) and math.isnan(result)):
        return None
    return f"{relative_difference(float(result), float(value)) * 100:+.1f}%"


def with_reference(frame: pd.DataFrame, *, vs_reference: bool = False) -> pd.DataFrame:
    """``frame`` with a ``reference`` column (and ``vs_reference``) where any run has one."""
    if frame.empty or f"{TAG}metric" not in frame.columns:
        return frame
    frame = frame.copy()
    frame["reference"] = frame.apply(reference_text, axis=1)
    if vs_reference:
        frame["vs_reference"] = frame.apply(difference_text, axis=1)
    return frame
