"""Parallel text: reading gzip corpora, Moses tokenization (sacremoses), word-level sides.

Lines are read as UTF-8 from ``.gz`` files; a truncated or corrupt gzip stream and invalid
UTF-8 become a :class:`~rnnlab.errors.DataError` that names the file and the fix. The
tokenizer splits with the Moses rules of each language (optionally lowercased), and the
detokenizer turns model output back into plain text, which is what BLEU is computed on.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

from rnnlab.data.vocab import Vocab
from rnnlab.errors import DataError

LANGUAGES = ("de", "en", "fr")


def read_gzip_lines(path: Path, *, fetch_hint: str) -> list[str]:
    """The lines of a gzip-compressed UTF-8 text file, without line ends or outer spaces."""
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="\n") as handle:
            return [line.strip() for line in handle]
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(
            f"{path} is not a complete gzip file ({type(exc).__name__}: {exc})",
            f"The download was cut short or the file is corrupt; delete it and run '{fetch_hint}'",
        ) from exc
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path} is not valid UTF-8 text (byte {exc.start}: {exc.reason})",
            f"The file is corrupt or not the published corpus; delete it and run '{fetch_hint}'",
        ) from exc


def check_language(lang: str, what: str) -> str:
    if lang not in LANGUAGES:
        raise ValueError(f"{what} must be one of {', '.join(LANGUAGES)}, got '{lang}'")
    return lang


class MosesText:
    """Tokenize and detokenize one language with sacremoses; optionally lowercase."""

    def __init__(self, lang: str, *, lowercase: bool = False) -> None:
        from sacremoses import MosesDetokenizer, MosesTokenizer

        self.lang = check_language(lang, "language")
        self.lowercase = lowercase
        self._tokenizer = MosesTokenizer(lang=lang)
        self._detokenizer = MosesDetokenizer(lang=lang)

    def tokenize(self, line: str) -> list[str]:
        text = line.lower() if self.lowercase else line
        return self._tokenizer.tokenize(text, escape=False)

    def detokenize(self, tokens: list[str]) -> str:
        return self._detokenizer.detokenize(tokens)


class WordText:
    """One side at word level: Moses tokens, ids from a vocabulary built on train.

    The same interface as :class:`rnnlab.data.subword.SubwordText` (tokenize, encode,
    pieces, decode, len), so the translation task does not branch on the tokenizer.
    """

    def __init__(self, moses: MosesText, vocab: Vocab | None = None) -> None:
        self.moses = moses
        self.vocab = vocab

    def __len__(self) -> int:
        return len(self.vocab) if self.vocab is not None else 0

    def tokenize(self, line: str) -> list[str]:
        return self.moses.tokenize(line)

    def encode(self, tokens: list[str]) -> list[int]:
        return self.vocab.encode(tokens)

    def pieces(self, ids: list[int]) -> list[str]:
        return self.vocab.decode(ids)

    def decode(self, ids: list[int]) -> str:
        return self.moses.detokenize(self.vocab.decode(ids))

    def state_dict(self) -> dict:
        return self.vocab.state_dict()
