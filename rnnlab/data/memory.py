"""The long-range memory problems, generated from a seed: the adding problem and the copy task.

* **Adding** (Hochreiter & Schmidhuber 1997, in the form of Le, Jaitly & Hinton 2015):
  ``length`` steps of (value, marker) pairs, values uniform in [0, 1], exactly two markers,
  one in each half of the sequence; the target is the sum of the two marked values.
  Answering 1 always scores E[(s − 1)²] = Var(s) = 1/6 ≈ 0.167.
* **Copy** (Arjovsky, Shah & Bengio 2016): ``count`` symbols drawn from ``symbols`` (ids
  1..symbols), then ``length − 1`` blanks (id 0), a delimiter (id symbols + 1) and ``count``
  blanks; the target is blank for ``length + count`` steps, then the symbols again. A
  memoryless model that outputs blank, then uniform guesses, scores
  count · ln(symbols) / (length + 2·count) in cross-entropy per step.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: the copy task's sizes in Arjovsky et al. (2016): 10 symbols out of 8
COPY_COUNT, COPY_SYMBOLS = 10, 8


def make_adding(n: int, length: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` adding problems: inputs (T, n, 2) time-major, targets (n,)."""
    if length < 2:
        raise ValueError(f"the adding problem needs at least 2 steps, got {length}")
    values = torch.rand(n, length, generator=generator)  # (n, T)
    half = length // 2
    first = torch.randint(0, half, (n,), generator=generator)  # (n,)
    second = torch.randint(half, length, (n,), generator=generator)
    markers = torch.zeros(n, length)
    rows = torch.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = torch.stack([values, markers], dim=-1).transpose(0, 1).contiguous()  # (T, n, 2)
    return x, values[rows, first] + values[rows, second]


def adding_baseline() -> float:
    """The MSE of always answering 1 (the expected sum): Var(u₁ + u₂) = 1/6."""
    return 1.0 / 6.0


def make_copy(
    n: int,
    length: int,
    generator: torch.Generator,
    *,
    count: int = COPY_COUNT,
    symbols: int = COPY_SYMBOLS,
) -> tuple[Tensor, Tensor]:
    """``n`` copy problems: input and target ids, each (length + 2·count, n), time-major."""
    if length < 1:
        raise ValueError(f"the copy task needs a delay of at least 1 step, got {length}")
    total = length + 2 * count
    data = torch.randint(1, symbols + 1, (count, n), generator=generator)  # (count, n)
    x = torch.zeros(total, n, dtype=torch.long)
    x[:count] = data
    x[count + length - 1] = symbols + 1  # the delimiter: recall now
    y = torch.zeros(total, n, dtype=torch.long)
    y[-count:] = data
    return x, y


def copy_baseline(length: int, *, count: int = COPY_COUNT, symbols: int = COPY_SYMBOLS) -> float:
    """Cross-entropy per step of the memoryless strategy (module docstring)."""
    return count * math.log(symbols) / (length + 2 * count)
