"""``rnnlab ui``: the MLflow UI against rnnlab's store, on loopback by default."""

from __future__ import annotations

import click

from rnnlab.commands.runs import URI_HELP

#: where ``rnnlab ui`` and ``rnnlab server`` listen (loopback unless told otherwise)
PORT_OPTION = click.option(
    "--port",
    default=5000,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Port to serve on.",
)
HOST_OPTION = click.option(
    "--host", default="127.0.0.1", show_default=True, help="Interface to bind."
)


@click.command()
@PORT_OPTION
@HOST_OPTION
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(min=1), help="Server workers."
)
@click.option("--uri", default=None, help=URI_HELP)
def ui(port: int, host: str, workers: int, uri: str | None) -> None:
    """Start the MLflow UI against rnnlab's tracking store (loopback only by default)."""
    from rnnlab.tracking.ui import serve

    serve(uri=uri, host=host, port=port, workers=workers)
