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
    type=click.Choice(["fused", "stepwise", "compiled", "parallel"]),
    help="Path to time (repeat); default: every path each cell has (with --length: the "
    "fused and parallel ones).",
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
@click.option(
    "--length",
    "lengths",
    callback=lambda ctx, param, value: _lengths(value),
    help="Sequence lengths, comma-separated (e.g. 64,256,1024,4096): each timed against "
    "nn.LSTM at that length, with peak memory per token; default cells: the scan cells.",
)
@click.option("--quick", is_flag=True, help="One round of one pass (a smoke run).")
def cells(device, names, paths, rounds, reps, chunk, threads, lengths, quick) -> None:
    """Forward+backward tokens/s of every cell and path at LM sizes (2x200, batch 20, bptt 35,
    or each --length), as a ratio to fused nn.LSTM; RATIO lines last."""
    from rnnlab.benchmarks.cells import header, ratio_lines, run

    rounds, reps = (1, 1) if quick else (rounds, reps)
    frame = run(
        device=device,
        cells=list(names) or None,
        paths=tuple(paths) or None,
        rounds=rounds,
        reps=reps,
        chunk=chunk,
        threads=threads,
        lengths=lengths,
    )
    click.echo(header(device, rounds))
    click.echo(frame.to_string(index=False))
    click.echo("\n".join(ratio_lines(frame)))


def _lengths(value: str | None) -> tuple[int, ...] | None:
    if not value:
        return None
    try:
        lengths = tuple(int(part) for part in value.split(","))
    except ValueError:
        lengths = ()
    if not lengths or min(lengths) < 1:
        raise click.BadParameter(f"takes positive integers like 64,256,1024, got {value!r}")
    return lengths
