"""``rnnlab translate RUN_ID [SENTENCE ...]``: translate with a finished translation run."""

from __future__ import annotations

import sys
import time

import click

from rnnlab.commands.runs import URI_HELP


@click.command()
@click.argument("run_id")
@click.argument("sentences", nargs=-1)
@click.option(
    "--beam",
    "beam_size",
    type=click.IntRange(min=1),
    default=None,
    help="Beam size (default: the run's).",
)
@click.option("--checkpoint", "which", default="best", show_default=True, help="best or last")
@click.option("--device", default=None, help="auto | cpu | cuda (default: the run's own)")
@click.option("--uri", default=None, help=URI_HELP)
def translate(
    run_id: str,
    sentences: tuple[str, ...],
    beam_size: int | None,
    which: str,
    device: str | None,
    uri: str | None,
) -> None:
    """Translate SENTENCES (or, without any, each line of stdin) with RUN_ID's model.

    \b
    Examples:
      rnnlab translate 3f2a... "Ein Mann fährt Fahrrad."
      rnnlab translate 3f2a... < sentences.de
    """
    from rnnlab.errors import RnnlabError
    from rnnlab.session.restore import load_run
    from rnnlab.tasks.base import Translates
    from rnnlab.tracking.uri import resolve_tracking_uri

    if beam_size is not None and beam_size < 1:
        raise RnnlabError(f"--beam must be at least 1, got {beam_size}", "Use --beam 1 for greedy")
    lines = list(sentences) if sentences else [line.rstrip("\n") for line in sys.stdin]
    restored = load_run(run_id, uri=resolve_tracking_uri(uri), which=which, device=device)
    task = restored.task
    if not isinstance(task, Translates):
        raise RnnlabError(
            f"Run {run_id} is a '{task.name}' run, not a translation run",
            "Pass the id of a run trained with task=translate (see 'rnnlab runs -e translate')",
        )
    keep = [i for i, line in enumerate(lines) if line.strip()]
    start = time.perf_counter()
    outputs = task.translate(restored.model, [lines[i] for i in keep], beam_size=beam_size)
    seconds = time.perf_counter() - start
    beam = beam_size or "as the run's"
    click.echo(
        f"translated {len(keep)} sentences in {seconds:.2f} s "
        f"({len(keep) / max(seconds, 1e-9):.1f} sentences/s, beam {beam})",
        err=True,
    )
    translated = dict(zip(keep, outputs, strict=True))
    for i in range(len(lines)):
        click.echo(translated.get(i, ""))
