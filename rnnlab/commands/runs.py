"""``rnnlab runs``: a pandas table of runs from the tracking store, filtered, sorted, pivoted."""

from __future__ import annotations

import click

URI_HELP = "Tracking URI (default: MLFLOW_TRACKING_URI, else ./mlflow.db)."


def split_columns(values: tuple[str, ...]) -> list[str]:
    return [c.strip() for value in values for c in value.split(",") if c.strip()]


def pivot_text(frame, *, pivot: tuple[str, str], metric: str, fmt: str) -> str:
    """The sweep grid of ``--pivot``: mean ± std cells (or the raw stats for csv/json)."""
    from rnnlab.analysis.runs import format_runs, pivot_grid, pivot_stats

    row, col = pivot
    stats = pivot_stats(frame, row=row, col=col, metric=metric)
    if fmt in ("csv", "json"):
        return format_runs(stats, fmt=fmt)
    grid = pivot_grid(stats, row=stats.columns[0], col=stats.columns[1])
    return format_runs(grid, fmt=fmt, title=f"{metric} (mean ± std)")


def health(*, uri: str, experiments: tuple[str, ...], check: bool, mark: bool) -> None:
    """``--check`` / ``--mark-dead``: print the report; exit 1 if a check found a problem."""
    from rnnlab.analysis.health import store_health

    lines, sound = store_health(uri=uri, experiments=experiments, check=check, mark_dead=mark)
    click.echo("\n".join(lines))
    raise SystemExit(0 if sound else 1)


@click.command()
@click.option(
    "--experiment",
    "-e",
    "experiments",
    multiple=True,
    help="Experiment name (repeatable; default: all).",
)
@click.option(
    "--status",
    "-s",
    "statuses",
    multiple=True,
    help="Only runs with this status: FINISHED, FAILED, KILLED, RUNNING (repeatable).",
)
@click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Only runs with this param value.",
)
@click.option(
    "--tag", "-t", "tags", multiple=True, metavar="KEY=VALUE", help="Only runs with this tag value."
)
@click.option(
    "--where",
    "-w",
    default=None,
    help="An MLflow search filter, e.g. \"params.optim._target_ LIKE '%RMSprop%'\" or "
    '"metrics.`val/loss` < 1".',
)
@click.option(
    "--columns",
    "-c",
    multiple=True,
    help="Columns to show, comma-separated: run_id, run_name, status, experiment, start_time, "
    "any param (optim.lr), metric (val/loss) or tag.",
)
@click.option("--sort", default=None, help="Sort by this column or metric (ascending).")
@click.option("--desc", is_flag=True, help="Sort descending.")
@click.option(
    "--pivot",
    nargs=2,
    default=None,
    metavar="ROW_PARAM COL_PARAM",
    help="A sweep grid: ROW_PARAM x COL_PARAM cells of --metric, mean ± std over the other "
    "params (seeds).",
)
@click.option("--metric", "-m", default=None, help="The metric a --pivot aggregates (final value).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json", "markdown"]),
    default="table",
    show_default=True,
)
@click.option(
    "--vs-reference",
    is_flag=True,
    help="Add the result's difference from the preset's published reference (vs_reference).",
)
@click.option("--uri", default=None, help=URI_HELP)
@click.option(
    "--max-results", default=1000, show_default=True, type=click.IntRange(1, 50000)
)  # 50000: MLflow's own limit for one search
@click.option(
    "--check",
    is_flag=True,
    help="Check the store's invariants (no duplicate metric steps, last.pt for resumable "
    "runs, statuses vs leases); print each problem, exit 1 if any.",
)
@click.option(
    "--mark-dead", is_flag=True, help="End RUNNING runs whose writer is gone (DEAD) as FAILED."
)
def runs(
    experiments: tuple[str, ...],
    statuses: tuple[str, ...],
    params: tuple[str, ...],
    tags: tuple[str, ...],
    where: str | None,
    columns: tuple[str, ...],
    sort: str | None,
    desc: bool,
    pivot: tuple[str, str] | None,
    metric: str | None,
    fmt: str,
    vs_reference: bool,
    uri: str | None,
    max_results: int,
    check: bool,
    mark_dead: bool,
) -> None:
    """Print a table of runs: name, status, key params and final metrics.

    \b
    rnnlab runs -e bitcount --status FINISHED --sort val/loss
    rnnlab runs --where "params.optim._target_ LIKE '%RMSprop%'" -c run_name,optim.lr,val/loss
    rnnlab runs --tag sweep=PARENT_RUN_ID --pivot optim.name optim.lr --metric val/loss
    rnnlab runs --format markdown > runs.md
    rnnlab runs -e ptb --vs-reference       # each result against the preset's paper figure
    """
    from rnnlab.analysis.reference import with_reference
    from rnnlab.analysis.runs import build_filter, format_runs, runs_table, search_frame
    from rnnlab.errors import RnnlabError
    from rnnlab.tracking.uri import resolve_tracking_uri

    if check or mark_dead:
        health(uri=resolve_tracking_uri(uri), experiments=experiments, check=check, mark=mark_dead)
    if pivot and not metric:
        raise RnnlabError(
            "--pivot needs the metric to aggregate", "Add --metric val/loss (or val/ppl)"
        )
    if metric and not pivot:
        raise RnnlabError(
            "--metric only applies to --pivot", "Use --sort METRIC to order runs by it"
        )
    filter_string = build_filter(where=where, status=statuses, params=params, tags=tags)
    frame = search_frame(
        uri=resolve_tracking_uri(uri),
        experiments=experiments,
        filter_string=filter_string,
        max_results=max_results,
        statuses=statuses,
    )
    if pivot:
        click.echo(pivot_text(frame, pivot=pivot, metric=metric, fmt=fmt))
        return
    frame = with_reference(frame, vs_reference=vs_reference)
    table = runs_table(frame, columns=split_columns(columns), sort=sort, descending=desc)
    click.echo(format_runs(table, fmt=fmt))
