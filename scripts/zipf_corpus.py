"""Generated word corpora for the benchmarks: sentences of words drawn from a Zipf law.

``write_zipf(path, tokens=..., types=...)`` writes about ``tokens`` words (plus one ``<eos>``
a line, counted by rnnlab) drawn i.i.d. from ``P(rank r) ∝ 1 / r^exponent`` over ``types``
made-up words (``w0`` the most frequent), 5 to 30 words a line. With ``every_type=True`` the
file ends with every type once, in lines of 100, so a vocabulary built from it has exactly
``types`` words however few tokens were drawn (a benchmark then trains on the drawn part
only, with ``task.max_tokens``). Deterministic for a seed; written in 1M-word chunks, so a
100M-token file needs no more memory than a 10M one. Never commit what it writes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CHUNK = 1_000_000


def zipf_probabilities(types: int, exponent: float = 1.0) -> np.ndarray:
    """(types,) the Zipf law over ranks 1..types."""
    weights = 1.0 / np.arange(1, types + 1, dtype=np.float64) ** exponent
    return weights / weights.sum()


def lines_of(words: list[str], rng: np.random.Generator) -> str:
    """``words`` as lines of 5-30 words each, every line ending in a newline."""
    lengths = rng.integers(5, 31, size=len(words) // 5 + 1)
    ends = np.minimum(np.cumsum(lengths), len(words))
    starts = np.concatenate([[0], ends[:-1]])
    return "".join(" ".join(words[a:b]) + "\n" for a, b in zip(starts, ends, strict=True) if b > a)


def write_zipf(
    path: Path,
    *,
    tokens: int,
    types: int,
    seed: int = 0,
    exponent: float = 1.0,
    every_type: bool = False,
) -> None:
    """Write the corpus described in the module docstring to ``path``."""
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(zipf_probabilities(types, exponent))
    names = np.array([f"w{i}" for i in range(types)], dtype=object)
    with path.open("w", encoding="utf-8") as out:
        for start in range(0, tokens, CHUNK):
            count = min(CHUNK, tokens - start)
            ranks = np.searchsorted(cumulative, rng.random(count), side="right")
            ranks = np.minimum(ranks, types - 1)  # rounding at the top of the curve
            out.write(lines_of(names[ranks].tolist(), rng))
        if every_type:
            for start in range(0, types, 100):
                out.write(" ".join(names[start : start + 100].tolist()) + "\n")


def write_splits(folder: Path, *, tokens: int, types: int, heldout: int, seed: int = 0) -> Path:
    """``folder``/train.txt (``tokens`` words, every type present), valid.txt and test.txt
    (``heldout`` words each, from the same law, other seeds); returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    write_zipf(folder / "train.txt", tokens=tokens, types=types, seed=seed, every_type=True)
    write_zipf(folder / "valid.txt", tokens=heldout, types=types, seed=seed + 1)
    write_zipf(folder / "test.txt", tokens=heldout, types=types, seed=seed + 2)
    return folder
