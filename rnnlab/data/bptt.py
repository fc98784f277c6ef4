"""Truncated-BPTT batching: a token stream laid out as parallel streams, cut into windows.

The corpus (one long id sequence) is split into ``batch_size`` contiguous streams, stored
time-major as columns of a (T, B) tensor. A window of ``bptt`` steps is then a slice of
rows: its input is ``streams[i : i + bptt]`` and its target the same slice shifted by one
step, so the hidden state at the end of one window is exactly the state the next window of
the same column starts from.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import Tensor


def batchify(ids: Tensor, batch_size: int) -> Tensor:
    """(N,) ids -> (N // B, B) streams; column b holds the b-th contiguous slice of the corpus.

    The last ``N % B`` ids, which do not fill a row, are dropped.
    """
    return stream_view(ids, batch_size).contiguous()  # (T, B)


def stream_view(ids: Tensor, batch_size: int) -> Tensor:
    """What :func:`batchify` returns, as a strided view of ``ids`` (no copy: for ids larger
    than memory, memory-mapped, whose windows are read one at a time)."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    steps = ids.numel() // batch_size
    if steps < 2:
        raise ValueError(
            f"{ids.numel()} tokens are too few for {batch_size} streams of at least 2 steps"
        )
    return ids[: steps * batch_size].view(batch_size, steps).t()  # (T, B) view


def num_windows(streams: Tensor, bptt: int) -> int:
    """How many windows :func:`windows` yields for (T, B) ``streams``."""
    return -(-(streams.shape[0] - 1) // bptt)


def windows(streams: Tensor, bptt: int) -> Iterator[tuple[Tensor, Tensor]]:
    """(input, target) pairs, each (t, B) with t = ``bptt`` (the last window may be shorter).

    ``target[s, b]`` is the token after ``input[s, b]`` in stream b.
    """
    if bptt <= 0:
        raise ValueError(f"bptt must be positive, got {bptt}")
    total = streams.shape[0] - 1  # the last row has no next token
    for start in range(0, total, bptt):
        length = min(bptt, total - start)
        yield (
            streams[start : start + length],  # (t, B)
            streams[start + 1 : start + 1 + length],  # (t, B)
        )
