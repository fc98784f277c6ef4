"""Runs as a pandas table, read with MLflow's own search API: filter, choose columns, sort,
pivot a sweep grid (mean ± std over seeds), and render as a rich table, CSV, JSON or Markdown.

Filters use MLflow's search syntax (``params.optim._target_ LIKE '%RMSprop%'``,
``metrics.`val/loss` < 1``, ``tags.sweep = '...'``), so the store does the filtering.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from rnnlab.errors import RnnlabError

KEY_PARAMS = ("task.name", "cell.name", "optim.name", "optim.lr", "seed")
BASE_COLUMNS = ("run_id", "run_name", "status", "experiment")
FORMATS = ("table", "csv", "json", "markdown")
STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
PREFIXES = ("params.", "metrics.", "tags.")


def quote(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


def build_filter(
    *,
    where: str | None = None,
    status: Sequence[str] = (),
    params: Sequence[str] = (),
    tags: Sequence[str] = (),
) -> str:
    """One MLflow filter string from ``--where``, ``--status``, ``--param K=V``, ``--tag K=V``."""
    clauses = [where.strip()] if where and where.strip() else []  # MLflow: AND only, no ()
    for value in status:
        if value.upper() not in STATUSES:
            raise RnnlabError(f"Unknown run status '{value}'", f"Use one of: {', '.join(STATUSES)}")
    if len(status) == 1:  # MLflow has no IN or OR for status: several are filtered after
        clauses.append(f"attributes.status = {quote(status[0].upper())}")
    for kind, items in (("params", params), ("tags", tags)):
        for item in items:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise RnnlabError(
                    f"--{kind[:-1]} wants KEY=VALUE, got '{item}'",
                    f"For example --{kind[:-1]} optim.name=rmsprop",
                )
            clauses.append(f"{kind}.`{key}` = {quote(value)}")
    return " AND ".join(clauses)


def search_frame(
    *,
    uri: str,
    experiments: Sequence[str] = (),
    filter_string: str = "",
    max_results: int = 1000,
    statuses: Sequence[str] = (),
) -> pd.DataFrame:
    """MLflow's own ``search_runs`` frame (params.*, metrics.*, tags.* columns) plus
    ``experiment`` and ``run_name``; empty if nothing matches."""
    from rnnlab.tracking.store import connect, search_runs_frame

    client = connect(uri)
    found = find_experiments(client, uri, experiments)
    if not found:
        return pd.DataFrame()
    frame = search_runs_frame(
        uri,
        [e.experiment_id for e in found],
        filter_string=filter_string,
        max_results=max_results,
    )
    if frame.empty:
        return frame
    names = {e.experiment_id: e.name for e in found}
    frame["experiment"] = frame["experiment_id"].map(names)
    frame["run_name"] = frame.get("tags.mlflow.runName")
    if len(statuses) > 1:  # one status is in the MLflow filter (build_filter)
        frame = frame[frame["status"].isin([s.upper() for s in statuses])]
    mark_dead_status(frame, uri)
    return frame.reset_index(drop=True)


def find_experiments(client, uri: str, experiments: Sequence[str]) -> list:
    """The experiments named (all when none is), or an error listing the known ones."""
    if not experiments:
        return client.search_experiments()
    found = []
    for name in experiments:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            names = sorted(e.name for e in client.search_experiments())
            raise RnnlabError(
                f"No experiment named '{name}' in {uri}",
                f"Known experiments: {', '.join(names) or 'none'}",
            )
        found.append(experiment)
    return found


def mark_dead_status(frame: pd.DataFrame, uri: str) -> None:
    """Status DEAD for a RUNNING run whose lease holder is gone (rnnlab.tracking.lease)."""
    from rnnlab.tracking.lease import LEASE_TAG, lease_alive

    column = f"tags.{LEASE_TAG}"
    if column not in frame.columns:
        return
    for index, row in frame[frame["status"] == "RUNNING"].iterrows():
        tag = row[column] if isinstance(row[column], str) else None
        if lease_alive(tag, uri=uri, run_id=row["run_id"]) is False:
            frame.loc[index, "status"] = "DEAD"


def resolve_column(frame: pd.DataFrame, name: str) -> str:
    """The frame column a user means by ``name``: as is, else params.*, metrics.*, tags.*."""
    for candidate in (name, *(prefix + name for prefix in PREFIXES)):
        if candidate in frame.columns:
            return candidate
    known = sorted({short_name(c) for c in frame.columns if c.startswith(PREFIXES)})
    raise RnnlabError(
        f"No column '{name}' among the runs found",
        f"Choose from: {', '.join([*BASE_COLUMNS, 'start_time', *known])}",
    )


def short_name(column: str) -> str:
    """``params.optim.lr`` -> ``optim.lr``; ``metrics.val/loss`` -> ``val/loss``."""
    for prefix in PREFIXES:
        if column.startswith(prefix):
            return column[len(prefix) :]
    return column


def default_columns(frame: pd.DataFrame) -> list[str]:
    params = [f"params.{p}" for p in KEY_PARAMS if f"params.{p}" in frame.columns]
    # system/* (MLflow's system metrics) stay out of the default table: ask for them by name
    metrics = sorted(
        c for c in frame.columns if c.startswith("metrics.") and not c.startswith("metrics.system/")
    )
    extra = [c for c in ("reference", "vs_reference") if c in frame.columns]
    return [c for c in BASE_COLUMNS if c in frame.columns] + params + metrics + extra


def runs_table(
    frame: pd.DataFrame,
    *,
    columns: Sequence[str] = (),
    sort: str | None = None,
    descending: bool = False,
) -> pd.DataFrame:
    """Chosen columns (default: name, status, key params, every metric), sorted, short names."""
    if frame.empty:
        return frame
    chosen = [resolve_column(frame, c) for c in columns] if columns else default_columns(frame)
    table = frame
    if sort:
        key = resolve_column(frame, sort)
        table = table.sort_values(
            key, ascending=not descending, na_position="last", key=numeric_if_possible
        )
    table = table[chosen].rename(columns=short_name)
    return table.reset_index(drop=True)


def runs_frame(
    *,
    uri: str,
    experiment: str | None = None,
    max_results: int = 1000,
    filter_string: str = "",
    columns: Sequence[str] = (),
    sort: str | None = None,
    descending: bool = False,
) -> pd.DataFrame:
    """One row per run: name, status, key params and the last value of every metric."""
    frame = search_frame(
        uri=uri,
        experiments=[experiment] if experiment else [],
        filter_string=filter_string,
        max_results=max_results,
    )
    return runs_table(frame, columns=columns, sort=sort, descending=descending)


def numeric_if_possible(values: pd.Series) -> pd.Series:
    """Params are strings in MLflow: sort '1e-3' < '0.01' as numbers when they all are."""
    converted = pd.to_numeric(values, errors="coerce")
    return converted if converted.notna().sum() == values.notna().sum() else values


def pivot_stats(frame: pd.DataFrame, *, row: str, col: str, metric: str) -> pd.DataFrame:
    """Long table (row, col, mean, std, n) of ``metric``'s final value over the runs of each
    (row, col) cell, e.g. over seeds; std is the sample standard deviation (NaN for n = 1)."""
    if frame.empty:
        raise RnnlabError("No runs match, so there is nothing to pivot", "Check the filters")
    row_key, col_key, metric_key = (resolve_column(frame, k) for k in (row, col, metric))
    data = frame[[row_key, col_key, metric_key]].dropna(subset=[metric_key])
    if data.empty:
        raise RnnlabError(
            f"No run matching the filters has the metric '{metric}'",
            "Check --metric (rnnlab runs lists the metrics) and the filters",
        )
    stats = (
        data.groupby([row_key, col_key])[metric_key]
        .agg(mean="mean", std="std", n="count")
        .reset_index()
        .rename(columns={row_key: short_name(row_key), col_key: short_name(col_key)})
    )
    for key in (short_name(row_key), short_name(col_key)):
        stats = stats.sort_values(key, key=numeric_if_possible, kind="stable")
    return stats.reset_index(drop=True)


def mean_std(mean: float, std: float, n: int) -> str:
    if n < 2 or math.isnan(std):
        return f"{mean:.4g} (n={n})"
    return f"{mean:.4g} ± {std:.2g}"


def pivot_grid(stats: pd.DataFrame, *, row: str, col: str) -> pd.DataFrame:
    """The wide grid of 'mean ± std' strings: one row per ROW value, one column per COL value."""
    cells = stats.assign(
        cell=[
            mean_std(m, s, int(n))
            for m, s, n in zip(stats["mean"], stats["std"], stats["n"], strict=True)
        ]
    )
    row_order = list(dict.fromkeys(stats[row]))
    col_order = list(dict.fromkeys(stats[col]))
    grid = cells.pivot(index=row, columns=col, values="cell").reindex(
        index=row_order, columns=col_order
    )
    grid = grid.fillna("")
    grid.columns = [f"{col}={c}" for c in grid.columns]
    return grid.reset_index()


# -- rendering ---------------------------------------------------------------------------
def cell_text(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def to_markdown(frame: pd.DataFrame) -> str:
    def row(cells) -> str:
        return "| " + " | ".join(cell_text(c).replace("|", "\\|") for c in cells) + " |"

    lines = [row(frame.columns), "|" + "|".join("---" for _ in frame.columns) + "|"]
    lines += [row(values) for values in frame.itertuples(index=False)]
    return "\n".join(lines)


def to_rich(frame: pd.DataFrame, *, title: str | None = None, width: int | None = None) -> str:
    """A rich table as text; numbers right-aligned, status coloured when on a terminal."""
    import io
    import sys

    from rich.console import Console
    from rich.table import Table

    tty = sys.stdout.isatty()
    table = Table(title=title, header_style="bold")
    for column in frame.columns:
        values = frame[column]
        numeric = pd.api.types.is_numeric_dtype(numeric_if_possible(values.dropna()))
        table.add_column(str(column), justify="right" if numeric else "left", overflow="fold")
    colours = {"FINISHED": "green", "FAILED": "red", "KILLED": "yellow", "RUNNING": "cyan"}
    for values in frame.itertuples(index=False):
        cells = []
        for column, value in zip(frame.columns, values, strict=True):
            text = cell_text(value)
            if column == "status" and text in colours and tty:
                text = f"[{colours[text]}]{text}[/]"
            cells.append(text)
        table.add_row(*cells)
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        force_terminal=tty,
        width=width or (None if tty else 100_000),
        color_system="auto" if tty else None,
    )
    console.print(table)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())


def format_runs(frame: pd.DataFrame, *, fmt: str = "table", title: str | None = None) -> str:
    """Render a table as a rich table, CSV, JSON records or Markdown."""
    if fmt not in FORMATS:
        raise RnnlabError(f"Unknown format '{fmt}'", f"Use one of: {', '.join(FORMATS)}")
    if fmt == "csv":
        return frame.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        return frame.to_json(orient="records", indent=2, date_format="iso")
    if frame.empty:
        return "no runs"
    if fmt == "markdown":
        return to_markdown(frame)
    return to_rich(frame, title=title)
