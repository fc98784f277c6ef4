"""Subword vocabularies with sentencepiece: trained on a run's training text, cached, saved.

The model is BPE or unigram with **byte fallback**: a character it never saw is spelled in
UTF-8 bytes rather than mapped to ``<unk>``, so every input encodes losslessly and no decoded
hypothesis contains ``<unk>``. Its special ids are those of the translation task (``<pad>``
0, ``<unk>`` 1, ``<s>`` 2, ``</s>`` 3), so the model's embeddings need no remapping.

Training is deterministic in its input and options, so the serialized model is cached under
the sha256 of both: a sweep's jobs train it once. The model travels as bytes (in the
checkpoint and as a run artifact), so translating needs no corpus.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

from rnnlab.errors import DataError

#: the translation task's special tokens, in id order
SPECIAL_IDS = {"pad_id": 0, "unk_id": 1, "bos_id": 2, "eos_id": 3}


def vocab_size_error(exc: RuntimeError, vocab_size: int, what: str) -> DataError | None:
    """sentencepiece's refusal of ``vocab_size`` as a clear error (None for other errors)."""
    text = str(exc)
    most = re.search(r"set it to a value <= (\d+)", text)
    if most:
        return DataError(
            f"task.spm.vocab_size={vocab_size} is larger than {what} allows: sentencepiece "
            f"can build at most {most.group(1)} pieces from it",
            f"Set task.spm.vocab_size={most.group(1)} or less, or train on more text",
        )
    least = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", text)
    if least:
        return DataError(
            f"task.spm.vocab_size={vocab_size} is smaller than the {least.group(2)} pieces "
            f"{what} needs for its characters, bytes and specials",
            f"Set task.spm.vocab_size={least.group(2)} or more",
        )
    return None


def train_model(
    lines: Iterable[str], *, model_type: str, vocab_size: int, what: str = "the training text"
) -> bytes:
    """A serialized sentencepiece model trained on ``lines``."""
    import sentencepiece as spm

    out = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=out,
            model_type=model_type,
            vocab_size=vocab_size,
            byte_fallback=True,
            minloglevel=2,
            **SPECIAL_IDS,
        )
    except RuntimeError as exc:
        clear = vocab_size_error(exc, vocab_size, what)
        if clear is None:
            raise
        raise clear from None
    return out.getvalue()


def cached_model(
    lines: list[str], *, model_type: str, vocab_size: int, cache_dir: Path, what: str
) -> bytes:
    """:func:`train_model`, cached under the sha256 of ``lines`` and the options."""
    key = hashlib.sha256()
    key.update(json.dumps({"type": model_type, "size": vocab_size, "ids": SPECIAL_IDS}).encode())
    for line in lines:
        key.update(line.encode("utf-8") + b"\n")
    path = cache_dir / "spm" / f"{key.hexdigest()}.model"
    if path.is_file():
        return path.read_bytes()
    proto = train_model(lines, model_type=model_type, vocab_size=vocab_size, what=what)
    path.parent.mkdir(parents=True, exist_ok=True)
    # write-then-rename: parallel sweep jobs never read a half-written model
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "wb") as handle:
        handle.write(proto)
    os.replace(tmp, path)
    return proto


class SubwordText:
    """One side's sentencepiece model: raw line -> pieces -> ids -> plain text."""

    def __init__(self, proto: bytes, *, lowercase: bool) -> None:
        import sentencepiece as spm

        self.proto = proto
        self.lowercase = lowercase
        self.sp = spm.SentencePieceProcessor(model_proto=proto)

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    def tokenize(self, line: str) -> list[str]:
        return self.sp.encode(line.lower() if self.lowercase else line, out_type=str)

    def encode(self, pieces: list[str]) -> list[int]:
        return [self.sp.piece_to_id(p) for p in pieces]

    def pieces(self, ids: list[int]) -> list[str]:
        return [self.sp.id_to_piece(i) for i in ids]

    def decode(self, ids: list[int]) -> str:
        """Plain text; ``<unk>`` and control ids are dropped (byte fallback makes ``<unk>``
        unreachable in training targets, this makes it impossible in output)."""
        keep = [i for i in ids if not (self.sp.is_unknown(i) or self.sp.is_control(i))]
        return self.sp.decode(keep)

    def state_dict(self) -> dict[str, str]:
        # base64 text: a checkpoint loads with torch.load(weights_only=True)
        return {"spm": base64.b64encode(self.proto).decode("ascii")}

    @classmethod
    def from_state_dict(cls, state: dict[str, str], *, lowercase: bool) -> SubwordText:
        return cls(base64.b64decode(state["spm"]), lowercase=lowercase)
