"""Streaming tokenisation of a text file into one tensor of ids, at word or character level.

A file is read in blocks of whole lines (about 1 MB) and decoded strictly, so a non-UTF-8
byte is reported with its line number, and no list of the corpus's strings is ever built:
counting keeps one ``Counter`` of distinct tokens, and encoding writes each block's ids as
int32 (4 bytes a token; 100M tokens are 400 MB) straight to a file, which
:mod:`rnnlab.data.cache` then memory-maps: neither the text nor its ids are ever held whole.

Levels: ``word`` splits on whitespace and ends each line with ``<eos>``; ``char`` reads every
character, the line end (always ``\\n``) included. Both map what the vocabulary lacks to
``<unk>``.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from itertools import repeat
from pathlib import Path
from typing import BinaryIO, ClassVar

from rnnlab.data.vocab import Vocab
from rnnlab.errors import DataError

EOS = "<eos>"
UNK = "<unk>"


class WordLevel:
    """Whitespace-separated words, ``<eos>`` at each line end."""

    name: ClassVar[str] = "word"
    unit: ClassVar[str] = "words"
    specials: ClassVar[tuple[str, ...]] = (UNK, EOS)
    #: the token that ends every line
    line_end: ClassVar[str] = EOS
    #: what a sample starts from: a sentence start
    start: ClassVar[list[str]] = [EOS]

    def tokens(self, text: str) -> list[str]:
        """The words of ``text`` (whole lines), ``<eos>`` where each line ends."""
        return text.replace("\n", f" {EOS} ").split()

    def split_prime(self, text: str) -> list[str]:
        return text.split()

    def join(self, tokens: Iterable[str]) -> str:
        return " ".join(tokens).replace(f"{EOS} ", f"{EOS}\n")

    def size_error(self, *, vocab_size: int | None, alphabet: int, path: Path) -> None:
        """Words beyond ``vocab_size`` become ``<unk>``: the usual cap, nothing to refuse."""
        return None


class CharLevel:
    """Every character of a line, its ``\\n`` included."""

    name: ClassVar[str] = "char"
    unit: ClassVar[str] = "characters"
    specials: ClassVar[tuple[str, ...]] = (UNK,)
    line_end: ClassVar[str] = "\n"
    start: ClassVar[list[str]] = ["\n"]

    def tokens(self, text: str) -> str:
        return text  # a str iterates by character; read_blocks ends every line with \n

    def split_prime(self, text: str) -> list[str]:
        return list(text)

    def join(self, tokens: Iterable[str]) -> str:
        return "".join(tokens)

    def size_error(self, *, vocab_size: int | None, alphabet: int, path: Path) -> None:
        """A character model that cannot write some characters of its own training text is
        refused: its bpc would not be a character model's (rule: vocab_size >= alphabet)."""
        needed = alphabet + len(self.specials)
        if vocab_size is None or vocab_size >= needed:
            return
        raise DataError(
            f"task.vocab_size={vocab_size} is smaller than the alphabet of {path}: {alphabet} "
            f"characters + <unk>. The {needed - vocab_size} rarest characters would all be "
            "read as <unk>, so the model could never write them and its bits per character "
            "would not measure the text",
            f"Use task.vocab_size=null (the whole alphabet) or at least {needed}; to drop rare "
            "characters on purpose, raise task.min_freq instead",
        )


LEVELS: dict[str, WordLevel | CharLevel] = {"word": WordLevel(), "char": CharLevel()}


#: bytes read at a time: whole lines, about this many (tokenising a block at once is what
#: makes it fast: one str.split and one C-level Counter/array update per block, not per line)
BLOCK = 1 << 20


def bad_line(path: Path, lines: list[bytes], first: int) -> DataError:
    """The DataError for the first line of ``lines`` (numbered from ``first``) not UTF-8."""
    for number, raw in enumerate(lines, start=first):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return DataError(
                f"{path} is not UTF-8 text: line {number} has the byte "
                f"0x{raw[exc.start]:02x} at column {exc.start + 1} ({exc.reason})",
                f"Convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8 {path.name} > "
                f"{path.stem}.utf8.txt) or remove that line",
            )
    raise AssertionError("a block that failed to decode has a line that does")


def read_blocks(path: Path) -> Iterator[tuple[str, int]]:
    """(text, lines): ``path`` in blocks of whole lines, decoded as UTF-8, every line ending
    in ``\n`` (``\r\n`` read as ``\n``, a last line without one given one)."""
    number = 1
    with path.open("rb") as handle:
        while lines := handle.readlines(BLOCK):
            try:
                text = b"".join(lines).decode("utf-8")
            except UnicodeDecodeError:
                raise bad_line(path, lines, number) from None
            if not text.endswith("\n"):
                text += "\n"
            yield text.replace("\r\n", "\n"), len(lines)
            number += len(lines)


def count_tokens(path: Path, level: WordLevel | CharLevel) -> Counter[str]:
    """How often each token occurs in ``path`` (insertion order: first appearance)."""
    counts: Counter[str] = Counter()
    for text, _ in read_blocks(path):
        counts.update(level.tokens(text))
    return counts


def build_vocab(
    counts: Counter[str],
    level: WordLevel | CharLevel,
    *,
    vocab_size: int | None,
    min_freq: int,
) -> Vocab:
    """The specials, then the tokens seen at least ``min_freq`` times, most frequent first
    (ties by first appearance), ``vocab_size`` in all."""
    return Vocab.build(
        counts, specials=level.specials, max_size=vocab_size, min_freq=min_freq, unk=UNK
    )


def estimated_tokens(path: Path, level: WordLevel | CharLevel) -> int:
    """About how many tokens ``path`` holds: its size times the tokens per byte of its first
    block (a whole file when it is smaller than a block)."""
    size = path.stat().st_size
    for text, _ in read_blocks(path):
        sample = len(text.encode("utf-8"))
        return -(-len(level.tokens(text)) * size // max(sample, 1))
    return 0


def encode_file(
    path: Path, vocab: Vocab, level: WordLevel | CharLevel, out: BinaryIO
) -> tuple[int, int]:
    """Write the int32 ids of ``path``'s tokens to ``out``, one block at a time;
    (ids written, lines read)."""
    get, unk = vocab.stoi.get, vocab.unk_index
    total = lines = 0
    for text, count in read_blocks(path):
        ids = array("i", map(get, level.tokens(text), repeat(unk)))  # C ints: 4 bytes
        out.write(ids.tobytes())
        total += len(ids)
        lines += count
    return total, lines
