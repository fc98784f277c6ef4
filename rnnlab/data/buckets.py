"""Length-bucketed batching and padding for variable-length token sequences.

Training batches group sentences of similar length so little compute goes to padding:
the examples are shuffled, cut into pools of ``pool`` batches, each pool is sorted by
length and cut into batches, and the batch order is shuffled again. All randomness comes
from the caller's ``torch.Generator``, so a task's batches depend only on its seed.

Under data parallelism every rank draws the same global batches (``world_size`` times the
batch size) and takes every ``world_size``-th example of each (:func:`shard`): the ranks'
batches at one step are of similar lengths and disjoint, and together they are the batch
one process would train on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor


def pad(sequences: Sequence[Sequence[int]], *, pad_index: int) -> tuple[Tensor, Tensor]:
    """Time-major padded ids (T, B) and the lengths (B,) of ``sequences``."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    out = torch.full((int(lengths.max()), len(sequences)), pad_index, dtype=torch.long)  # (T, B)
    for b, seq in enumerate(sequences):
        out[: len(seq), b] = torch.tensor(seq, dtype=torch.long)
    return out, lengths


def bucketed_batches(
    lengths: Sequence[int],
    *,
    batch_size: int,
    generator: torch.Generator,
    pool: int = 50,
) -> Iterator[list[int]]:
    """Indices of each training batch: similar lengths together, order shuffled."""
    n = len(lengths)
    order = torch.randperm(n, generator=generator).tolist()
    batches: list[list[int]] = []
    span = batch_size * pool
    for start in range(0, n, span):
        chunk = sorted(order[start : start + span], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    for b in torch.randperm(len(batches), generator=generator).tolist():
        yield batches[b]


def sorted_batches(lengths: Sequence[int], *, batch_size: int) -> Iterator[list[int]]:
    """Deterministic batches for evaluation, sorted by length (callers restore the order)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def shard(indices: Sequence[int], *, rank: int, world_size: int) -> list[int] | None:
    """Rank ``rank``'s share of one global batch (every ``world_size``-th example, so the
    shares have similar lengths), or None when the batch has fewer examples than ranks (all
    ranks then skip it, and keep the same number of steps)."""
    if len(indices) < world_size:
        return None
    return list(indices[rank::world_size])
