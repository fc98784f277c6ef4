"""``rnnlab data fetch NAME``: download or copy a corpus and verify every file."""

from __future__ import annotations

import click


@click.group()
def data() -> None:
    """Fetch and verify corpora (Penn Treebank, Multi30k)."""


@data.command()
@click.argument("name")
@click.option(
    "--source",
    type=click.Path(file_okay=False),
    default=None,
    help="Copy from this local folder instead of downloading.",
)
@click.option(
    "--data-dir", default=None, help="Data root (default: $RNNLAB_DATA, else ./datasets)."
)
def fetch(name: str, source: str | None, data_dir: str | None) -> None:
    """Fetch corpus NAME into the data root, verifying each file's sha256."""
    from rnnlab.data.fetch import fetch as fetch_corpus

    for path in fetch_corpus(name, data_dir=data_dir, source=source):
        click.echo(f"ok  {path}")


@data.command("list")
def list_corpora() -> None:
    """List the corpora rnnlab knows."""
    from rnnlab.data.fetch import known_corpora, load_manifest

    for name in known_corpora():
        click.echo(f"{name:10s} {load_manifest(name).description}")
