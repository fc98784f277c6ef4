"""``rnnlab forecast RUN_ID --data new.csv``: forecast past the end of a table with a run."""

from __future__ import annotations

from pathlib import Path

import click

from rnnlab.commands.runs import URI_HELP


@click.command()
@click.argument("run_id")
@click.option(
    "--data",
    "data",
    required=True,
    type=click.Path(dir_okay=False),
    help="A CSV or Parquet table with the run's columns; each series' last lookback rows are read.",
)
@click.option(
    "--out",
    default=None,
    type=click.Path(dir_okay=False),
    help="Write the CSV here (default: stdout).",
)
@click.option("--checkpoint", "which", default="best", show_default=True, help="best or last")
@click.option("--device", default="cpu", show_default=True, help="auto | cpu | cuda")
@click.option("--uri", default=None, help=URI_HELP)
def forecast(
    run_id: str, data: str, out: str | None, which: str, device: str, uri: str | None
) -> None:
    """Forecast the next horizon rows of every series in DATA with RUN_ID's model.

    The table is read and checked as the run read its training table, scaled with the run's
    own scaler, and the forecasts are written as CSV (series, step, time, one column per
    target), the timestamps continuing at the table's own step.
    """
    from rnnlab.errors import RnnlabError
    from rnnlab.session.restore import load_run
    from rnnlab.tasks.forecast_output import forecast_new
    from rnnlab.tracking.uri import resolve_tracking_uri

    restored = load_run(run_id, uri=resolve_tracking_uri(uri), which=which, device=device)
    if restored.task.name != "forecast":
        raise RnnlabError(
            f"Run {run_id} is a '{restored.task.name}' run, not a forecasting run",
            "Pass the id of a run trained with task=forecast (rnnlab runs -e forecast)",
        )
    frame = forecast_new(restored.task, restored.model, Path(data))
    if out is None:
        click.echo(frame.to_csv(index=False, float_format="%.6g"), nl=False)
        return
    frame.to_csv(out, index=False, float_format="%.6g")
    click.echo(f"wrote {len(frame)} forecasts to {out}", err=True)
