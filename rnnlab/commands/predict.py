"""``rnnlab predict RUN_ID --data new.csv``: a label for every sequence, from a classify run."""

from __future__ import annotations

from pathlib import Path

import click

from rnnlab.commands.runs import URI_HELP


@click.command()
@click.argument("run_id")
@click.option(
    "--data",
    required=True,
    type=click.Path(dir_okay=False),
    help="Sequences in the run's layout (long, wide or .ts); labels, if present, are ignored.",
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
def predict(
    run_id: str, data: str, out: str | None, which: str, device: str, uri: str | None
) -> None:
    """Predict the class of every sequence in DATA with RUN_ID's classifier (CSV: id, label)."""
    from rnnlab.errors import RnnlabError
    from rnnlab.session.restore import load_run
    from rnnlab.tracking.uri import resolve_tracking_uri

    restored = load_run(run_id, uri=resolve_tracking_uri(uri), which=which, device=device)
    task = restored.task
    if task.name != "classify":
        raise RnnlabError(
            f"Run {run_id} is a '{task.name}' run, not a classification run",
            "Pass the id of a run trained with task=classify (rnnlab runs -e classify)",
        )
    rows = task.predict_file(restored.model, Path(data))
    text = "id,label\n" + "".join(f"{i},{label}\n" for i, label in rows)
    if out is None:
        click.echo(text, nl=False)
        return
    Path(out).write_text(text)
    click.echo(f"wrote {len(rows)} predictions to {out}", err=True)
