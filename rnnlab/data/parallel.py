"""Parallel corpora: a folder of line-aligned files, or a registered corpus (Multi30k).

A folder holds one file per split and language, ``<stem>.<lang>`` or ``<stem>.<lang>.gz``;
the stems default to ``train``, ``valid`` and ``test`` and can be set per split (Multi30k's
own are ``train``, ``val`` and ``test_2016_flickr``). A registered corpus is found under the
data root and verified against its manifest; a folder is not checksummed but fingerprinted
(sha256 of each file), which names the data a run read.

Every pair is checked before any training: both files exist (else the error lists what the
folder holds), both are UTF-8 (else the first bad line's number), both have the same number
of lines (else both counts) and the split is not empty.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rnnlab.errors import DataError

SPLITS = ("train", "val", "test")
#: the stems of each registered parallel corpus, fixed by its manifest
REGISTERED = {"multi30k": {"train": "train", "val": "val", "test": "test_2016_flickr"}}
#: how many file names an error lists before it says "and N more"
LISTED = 20


@dataclass(frozen=True)
class PairFiles:
    """The source and target file of one split."""

    split: str
    src: Path
    tgt: Path


def is_registered(corpus: str) -> bool:
    return corpus in REGISTERED


def registered_pairs(
    corpus: str, langs: tuple[str, str], *, data_dir: str | os.PathLike | None
) -> list[PairFiles]:
    """The verified files of a registered corpus (a DataError if missing or corrupt)."""
    from rnnlab.data.fetch import corpus_file

    stems = REGISTERED[corpus]
    return [
        PairFiles(
            split,
            *(
                corpus_file(corpus, f"{stems[split]}.{lang}.gz", data_dir=data_dir)
                for lang in langs
            ),
        )
        for split in SPLITS
    ]


def listing(folder: Path) -> str:
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    if not names:
        return "no files"
    shown = ", ".join(names[:LISTED])
    return shown + (f" and {len(names) - LISTED} more" if len(names) > LISTED else "")


def folder_pairs(folder: Path, langs: tuple[str, str], stems: dict[str, str]) -> list[PairFiles]:
    """``<stem>.<lang>`` (or ``.gz``) of every split in ``folder``; a DataError naming what
    is missing and what the folder holds instead."""
    if not folder.is_dir():
        raise DataError(
            f"task.corpus={folder}: there is no folder {folder.resolve()}",
            f"Point task.corpus at a folder holding {{train,valid,test}}.{{{','.join(langs)}}} "
            f"(plain or .gz), or name a registered corpus ({', '.join(REGISTERED)})",
        )
    found: dict[tuple[str, str], Path] = {}
    missing: list[str] = []
    for split in SPLITS:
        for lang in langs:
            name = f"{stems[split]}.{lang}"
            path = next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)
            if path is None:
                missing.append(f"{name}[.gz]")
            else:
                found[split, lang] = path
    if missing:
        raise DataError(
            f"{folder} lacks {', '.join(missing)} (it holds {listing(folder)})",
            "Name the files <split>.<lang> or <split>.<lang>.gz, or set the stems your files use "
            "with task.split_names.train/val/test (e.g. task.split_names.val=val)",
        )
    return [PairFiles(s, found[s, langs[0]], found[s, langs[1]]) for s in SPLITS]


def iter_lines(path: Path, *, fix: str) -> Iterator[str]:
    """The lines of a UTF-8 text file (gzip if it ends in ``.gz``), stripped, one at a time;
    a DataError naming the first line that is not UTF-8, or a broken gzip stream."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    yield raw.decode("utf-8").strip()
                except UnicodeDecodeError as exc:
                    raise DataError(
                        f"{path} is not UTF-8 text: line {number} has an invalid byte "
                        f"at column {exc.start + 1} ({exc.reason})",
                        f"Convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8); {fix}",
                    ) from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(
            f"{path} is not a complete gzip file ({type(exc).__name__}: {exc})",
            f"The file is cut short or corrupt; {fix}",
        ) from exc


def read_lines(path: Path, *, fix: str) -> list[str]:
    """Every line of ``path`` (:func:`iter_lines`)."""
    return list(iter_lines(path, fix=fix))


def count_lines(path: Path) -> int:
    """The number of lines of a plain or gzip file, without decoding it."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        return sum(1 for _ in handle)


def read_pair(pair: PairFiles, *, fix: str) -> tuple[list[str], list[str]]:
    """Both sides of one split, checked to be line-aligned and not empty."""
    src, tgt = read_lines(pair.src, fix=fix), read_lines(pair.tgt, fix=fix)
    if len(src) != len(tgt):
        raise DataError(
            f"The {pair.split} split is not line-aligned: {pair.src} has {len(src)} lines, "
            f"{pair.tgt} has {len(tgt)}",
            "Line i of the source file must translate line i of the target file; fix the pair "
            "so that both have the same number of lines",
        )
    if not any(s or t for s, t in zip(src, tgt, strict=True)):
        raise DataError(
            f"The {pair.split} split is empty: {pair.src} and {pair.tgt} hold no text",
            "Put at least one sentence pair in every split (train, val and test)",
        )
    return src, tgt


def fingerprint(pair: PairFiles) -> str:
    """sha256 of the pair's two files, as one digest (the direction is part of it)."""
    import hashlib

    from rnnlab.data.fetch import sha256_of

    return hashlib.sha256(f"{sha256_of(pair.src)}\n{sha256_of(pair.tgt)}".encode()).hexdigest()
