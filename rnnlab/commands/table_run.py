"""What ``rnnlab forecast`` and ``rnnlab predict`` share: a run id, a table of new data, an
optional output file, and the run's model restored for the one task it must have been
trained on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from rnnlab.commands.runs import URI_HELP


def table_command_options(data_help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """RUN_ID, ``--data`` (``data_help`` says what the table holds), ``--out``,
    ``--checkpoint``, ``--device`` and ``--uri``, in that order."""
    options = [
        click.argument("run_id"),
        click.option("--data", required=True, type=click.Path(dir_okay=False), help=data_help),
        click.option(
            "--out",
            default=None,
            type=click.Path(dir_okay=False),
            help="Write the CSV here (default: stdout).",
        ),
        click.option(
            "--checkpoint", "which", default="best", show_default=True, help="best or last"
        ),
        click.option("--device", default="cpu", show_default=True, help="auto | cpu | cuda"),
        click.option("--uri", default=None, help=URI_HELP),
    ]

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):  # click applies the innermost decorator first
            command = option(command)
        return command

    return decorate


def restore_for(run_id: str, *, task: str, what: str, which: str, device: str, uri: str | None):
    """RUN_ID's model and task (``rnnlab.session.restore.load_run``), refused with one
    paragraph unless the run trained ``task`` (``what`` names such a run in the message)."""
    from rnnlab.errors import RnnlabError
    from rnnlab.session.restore import load_run
    from rnnlab.tracking.uri import resolve_tracking_uri

    restored = load_run(run_id, uri=resolve_tracking_uri(uri), which=which, device=device)
    if restored.task.name != task:
        raise RnnlabError(
            f"Run {run_id} is a '{restored.task.name}' run, not a {what} run",
            f"Pass the id of a run trained with task={task} (rnnlab runs -e {task})",
        )
    return restored


def write_csv(text: str, out: str | None, *, count: int, what: str) -> None:
    """``text`` to stdout, or to ``out`` with one line on stderr saying how many ``what``."""
    if out is None:
        click.echo(text, nl=False)
        return
    Path(out).write_text(text)
    click.echo(f"wrote {count} {what} to {out}", err=True)
