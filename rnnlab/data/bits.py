"""Random binary sequences and their counts: the data of the bit-count demo."""

from __future__ import annotations

import torch
from torch import Tensor


def make_bits(n: int, seq_len: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` random binary sequences (T, n, 1), time-major, and their counts (n,)."""
    bits = torch.randint(0, 2, (n, seq_len), generator=generator).float()  # (n, T)
    x = bits.T.unsqueeze(-1).contiguous()  # (T, n, 1)
    return x, bits.sum(dim=1)


def training_bits(*, seed: int, n_train: int, seq_len: int) -> tuple[Tensor, Tensor]:
    """The training split a bit-count task with this seed draws first (see BitCount)."""
    return make_bits(n_train, seq_len, torch.Generator().manual_seed(seed))
