"""A language model's text, tokenised once: the vocabulary of train and each file's ids.

Both are cached (:mod:`rnnlab.data.cache`): the vocabulary by the digest of train and the
options that shape it (level, ``vocab_size``, ``min_freq``), a file's ids by the file's digest,
the level and the digest of the vocabulary that encoded them. A sweep over anything else
tokenises once; :attr:`TokenisedText.seconds` is the time spent tokenising (0 on cache hits).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import BinaryIO

from torch import Tensor

from rnnlab.data import cache
from rnnlab.data.corpus import SplitFile
from rnnlab.data.tokenise import (
    LEVELS,
    build_vocab,
    count_tokens,
    encode_file,
    estimated_tokens,
)
from rnnlab.data.vocab import Vocab
from rnnlab.errors import DataError


def empty_split(source: SplitFile) -> DataError:
    return DataError(
        f"The {source.split} split {source.path} is empty: it holds no text, only blank lines",
        "Put text in it (one sentence or paragraph per line), or name another file",
    )


class TokenisedText:
    """Tokenises files at one level with one vocabulary, through the cache."""

    def __init__(self, *, level: str, vocab_size: int | None, min_freq: int, root: Path) -> None:
        self.level = LEVELS[level]
        self.root = root  # the cache root (rnnlab.data.cache.cache_dir)
        self.vocab_size = vocab_size
        self.min_freq = min_freq
        #: time spent counting and encoding (cache hits cost none), and the hits
        self.seconds = 0.0
        self.cache_hits = 0

    def vocab(self, train: SplitFile) -> Vocab:
        """The vocabulary of ``train`` (cached), or a DataError when it would be empty."""
        key = cache.cache_key(
            "vocab",
            digest=train.digest,
            level=self.level.name,
            vocab_size=self.vocab_size,
            min_freq=self.min_freq,
        )
        cached = cache.load(key, root=self.root)
        if cached is not None:
            self.cache_hits += 1
            return Vocab.from_state_dict(cached)
        start = time.perf_counter()
        counts = count_tokens(train.path, self.level)
        if sum(counts.values()) == counts[self.level.line_end]:
            raise empty_split(train)
        vocab = build_vocab(counts, self.level, vocab_size=self.vocab_size, min_freq=self.min_freq)
        kept = sum(1 for c in counts.values() if c >= self.min_freq)
        self.level.size_error(vocab_size=self.vocab_size, alphabet=kept, path=train.path)
        if len(vocab) <= len(self.level.specials):
            raise DataError(
                f"The vocabulary built from {train.path} is empty: none of its "
                f"{len(counts)} distinct {self.level.unit} is seen task.min_freq="
                f"{self.min_freq} times or more within task.vocab_size={self.vocab_size}",
                f"Lower task.min_freq (1 keeps every one) or raise task.vocab_size above "
                f"{len(self.level.specials)} (null: no cap)",
            )
        self.seconds += time.perf_counter() - start
        cache.save(key, vocab.state_dict(), root=self.root)
        return vocab

    def ids(self, source: SplitFile, vocab: Vocab) -> Tensor:
        """The (N,) int32 ids of ``source`` under ``vocab``, memory-mapped from the cache."""
        key = cache.cache_key(
            "ids", digest=source.digest, level=self.level.name, vocab=vocab.digest()
        )
        cached = cache.load_ids(key, root=self.root)
        if cached is not None:
            self.cache_hits += 1
            return cached
        start = time.perf_counter()

        def write(out: BinaryIO) -> int:
            total, lines = encode_file(source.path, vocab, self.level, out)
            if total == lines:  # only line ends: refused before the entry is complete
                raise empty_split(source)
            return total

        needed = 4 * estimated_tokens(source.path, self.level)  # int32 ids
        ids = cache.write_ids(key, write, root=self.root, needed=needed, what=str(source.path))
        self.seconds += time.perf_counter() - start
        return ids
