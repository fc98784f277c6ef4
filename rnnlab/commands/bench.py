"""``rnnlab bench``: speed benchmarks (ratios against a baseline timed side by side)."""

from __future__ import annotations

import click


@click.group()
def bench() -> None:
    """Speed benchmarks; each prints a pandas table."""


@bench.command("cells")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--cells", "names", multiple=True, help="Cell to time (repeat); default: all.")
@click.option(
    "--paths",
    multiple=True,
    type=click.Choice(["fused", "stepwise", "compiled"]),
    help="Path to time (repeat); default: all three.",
)
@click.option(
    "--rounds",
    default=5,
    show_default=True,
    type=click.IntRange(min=1),
    help="Interleaved timing rounds.",
)
@click.option(
    "--reps", default=3, show_default=True, type=click.IntRange(min=1), help="Passes per timing."
)
@click.option(
    "--chunk",
    default=8,
    show_default=True,
    type=click.IntRange(min=1),
    help="Steps per compiled graph.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="torch CPU threads (1 gives stable ratios on a shared machine; 0: torch's default).",
)
def cells(device, names, paths, rounds, reps, chunk, threads) -> None:
    """Forward+backward tokens/s of every cell and path at LM sizes (2x200, batch 20, bptt 35),
    as a ratio to fused nn.LSTM."""
    from rnnlab.benchmarks.cells import header, run

    frame = run(
        device=device,
        cells=list(names) or None,
        paths=tuple(paths) or ("fused", "stepwise", "compiled"),
        rounds=rounds,
        reps=reps,
        chunk=chunk,
        threads=threads,
    )
    click.echo(header(device, rounds))
    click.echo(frame.to_string(index=False))
