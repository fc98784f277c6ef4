"""``rnnlab runs``: a pandas table of runs from the tracking store."""

from __future__ import annotations

import click

URI_HELP = "Tracking URI (default: MLFLOW_TRACKING_URI, else ./mlflow.db)."


@click.command()
@click.option("--experiment", "-e", default=None, help="Experiment name (default: all).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@click.option("--uri", default=None, help=URI_HELP)
@click.option("--max-results", default=1000, show_default=True)
def runs(experiment: str | None, fmt: str, uri: str | None, max_results: int) -> None:
    """Print a table of runs: name, status, key params and final metrics."""
    from rnnlab.analysis.runs import format_runs, runs_frame
    from rnnlab.tracking.uri import resolve_tracking_uri

    frame = runs_frame(
        uri=resolve_tracking_uri(uri), experiment=experiment, max_results=max_results
    )
    click.echo(format_runs(frame, fmt=fmt))
