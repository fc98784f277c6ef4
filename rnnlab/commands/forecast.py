"""``rnnlab forecast RUN_ID --data new.csv``: forecast past the end of a table with a run."""

from __future__ import annotations

from pathlib import Path

import click

from rnnlab.commands.table_run import restore_for, table_command_options, write_csv


@click.command()
@table_command_options(
    "A CSV or Parquet table with the run's columns; each series' last lookback rows are read."
)
def forecast(
    run_id: str, data: str, out: str | None, which: str, device: str, uri: str | None
) -> None:
    """Forecast the next horizon rows of every series in DATA with RUN_ID's model.

    The table is read and checked as the run read its training table, scaled with the run's
    own scaler, and the forecasts are written as CSV (series, step, time, one column per
    target), the timestamps continuing at the table's own step.
    """
    from rnnlab.tasks.forecast_output import forecast_new

    restored = restore_for(
        run_id, task="forecast", what="forecasting", which=which, device=device, uri=uri
    )
    frame = forecast_new(restored.task, restored.model, Path(data))
    text = frame.to_csv(index=False, float_format="%.6g")
    write_csv(text, out, count=len(frame), what="forecasts")
