"""``rnnlab plot`` (learning curves of several runs) and ``rnnlab landscape`` (the two-weight
loss surface of bit-count Elman runs, with their paths)."""

from __future__ import annotations

import click

from rnnlab.commands.params import OutputFile
from rnnlab.commands.runs import URI_HELP


@click.command()
@click.argument("run_ids", nargs=-1, required=True)
@click.option("--metric", "-m", default="train/loss", show_default=True, help="Metric to plot.")
@click.option(
    "--out",
    "-o",
    type=OutputFile(),
    default=None,
    help="PNG file (default: plot-METRIC-RUNID.png here).",
)
@click.option("--uri", default=None, help=URI_HELP)
def plot(run_ids: tuple[str, ...], metric: str, out: str | None, uri: str | None) -> None:
    """Overlay the METRIC learning curves of RUN_IDS in one PNG (log y-axis where it helps)."""
    from pathlib import Path

    from rnnlab.analysis.history import default_output, load_runs
    from rnnlab.analysis.plots import plot_curves
    from rnnlab.tracking.uri import resolve_tracking_uri

    runs = load_runs(run_ids, uri=resolve_tracking_uri(uri))
    curves = {run.label: run.history(metric) for run in runs}
    path = Path(out or default_output("plot", runs, metric))
    xlabel = (
        "epoch"
        if all(s == i + 1 for c in curves.values() for i, (s, _) in enumerate(c))
        else "step"
    )
    plot_curves(curves, path, title=metric, xlabel=xlabel, ylabel=metric)
    click.echo(str(path.resolve()))


@click.command()
@click.argument("run_ids", nargs=-1, required=True)
@click.option(
    "--out", "-o", type=OutputFile(), default=None, help="PNG file (default: landscape-RUNID.png)."
)
@click.option("--no-log-artifact", is_flag=True, help="Do not attach the PNG to the runs.")
@click.option("--uri", default=None, help=URI_HELP)
def landscape(
    run_ids: tuple[str, ...], out: str | None, no_log_artifact: bool, uri: str | None
) -> None:
    """Draw the loss surface over (w_x, w_rec) of bitcount runs with the elman cell, on each
    run's own training data and in the precision they trained in (the plot says which; bf16
    runs are marked), with every run's path; also logged to each run as plots/landscape.png.

    \b
    rnnlab landscape SGD_RUN_ID RMSPROP_RUN_ID
    """
    from pathlib import Path

    from rnnlab.analysis.history import default_output, load_runs
    from rnnlab.analysis.landscape import log_to_runs, plot_landscape
    from rnnlab.tracking.uri import resolve_tracking_uri

    runs = load_runs(run_ids, uri=resolve_tracking_uri(uri))
    path = plot_landscape(runs, Path(out or default_output("landscape", runs)))
    if not no_log_artifact:
        log_to_runs(runs, path)
    click.echo(str(path.resolve()))
