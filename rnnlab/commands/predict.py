"""``rnnlab predict RUN_ID --data new.csv``: a label for every sequence, from a classify run."""

from __future__ import annotations

from pathlib import Path

import click

from rnnlab.commands.table_run import restore_for, table_command_options, write_csv


@click.command()
@table_command_options(
    "Sequences in the run's layout (long, wide or .ts); labels, if present, are ignored."
)
def predict(
    run_id: str, data: str, out: str | None, which: str, device: str, uri: str | None
) -> None:
    """Predict the class of every sequence in DATA with RUN_ID's classifier (CSV: id, label)."""
    restored = restore_for(
        run_id, task="classify", what="classification", which=which, device=device, uri=uri
    )
    rows = restored.task.predict_file(restored.model, Path(data))
    text = "id,label\n" + "".join(f"{i},{label}\n" for i, label in rows)
    write_csv(text, out, count=len(rows), what="predictions")
