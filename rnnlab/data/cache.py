"""A cache of tokenised data, keyed by the digest of the text and the options that read it.

A sweep's jobs read the same corpus with the same options; the first tokenises, the others
load the ids (``torch.load`` of a few hundred MB takes well under a second). Entries live in
:func:`cache_dir` (``$RNNLAB_CACHE``, else ``paths.cache_dir``, else ``~/.cache/rnnlab``; the
sentencepiece models of :mod:`rnnlab.data.subword` live there too); one file per key, written to a temp file and
renamed, so parallel jobs never read a half-written entry. Token ids are raw int32 files
(``<key>.int32``), written block by block and memory-mapped when read, so a corpus larger
than memory is never loaded whole. A cache that cannot be written (read-only) costs only the
time (and, then, the ids are held in memory): the run goes on and says so on stderr. A disk
too full for the ids is refused, with the size they need.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import Tensor

from rnnlab.errors import DataError

ENV_VAR = "RNNLAB_CACHE"
#: bump when the layout of cached entries changes, so old entries are never misread
FORMAT = 1


def cache_dir(configured: str | os.PathLike | None = None) -> Path:
    """rnnlab's one cache root: ``$RNNLAB_CACHE``, else ``configured`` (``paths.cache_dir``),
    else ``~/.cache/rnnlab``."""
    chosen = os.environ.get(ENV_VAR) or configured or Path.home() / ".cache" / "rnnlab"
    return Path(chosen).expanduser().resolve()


def cache_key(kind: str, **parts: Any) -> str:
    """One stable name for ``parts`` (digests and options, JSON-serialisable)."""
    text = json.dumps({"kind": kind, "format": FORMAT, **parts}, sort_keys=True)
    return f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:32]}"


def load(key: str, *, root: Path) -> Any | None:
    """The entry saved under ``key`` in ``root``, or None when there is none (or it cannot be
    read)."""
    path = root / f"{key}.pt"
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged entry is rebuilt, not fatal: it is only a cache
        print(f"rnnlab: ignoring the damaged cache entry {path} ({exc})", file=sys.stderr)
        return None


def mapped_ids(path: Path) -> Tensor:
    """The int32 ids of ``path`` as a read-only memory-mapped tensor (paged in as read)."""
    array = np.memmap(path, dtype=np.int32, mode="r")
    with warnings.catch_warnings():  # torch warns that numpy's mapping is read-only: it is
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def load_ids(key: str, *, root: Path) -> Tensor | None:
    """The ids saved under ``key`` in ``root`` (memory-mapped), or None."""
    path = root / f"{key}.int32"
    return mapped_ids(path) if path.is_file() else None


def free_bytes(folder: Path) -> int:
    """Free space on the disk that holds ``folder`` (or would: its nearest existing parent)."""
    place = folder
    while not place.exists() and place != place.parent:
        place = place.parent
    return shutil.disk_usage(place).free


def no_room(folder: Path, *, needed: int, free: int, what: str) -> DataError:
    mb = -(-needed // 10**6)
    return DataError(
        f"The token cache for {what} needs about {mb:,} MB in {folder}, and its disk has "
        f"{free / 1e6:,.0f} MB free",
        f"Free at least {mb:,} MB there, or set {ENV_VAR} (or paths.cache_dir) to a folder on "
        "a disk with that much room",
    )


def write_ids(
    key: str, write: Callable[[BinaryIO], int], *, root: Path, needed: int, what: str
) -> Tensor:
    """Ids that ``write`` streams into a file, saved under ``key`` and memory-mapped; in
    memory when the cache cannot be written (read-only, not a folder). An error in ``write``
    leaves no entry. ``needed`` (about the file's size, in bytes) more than the disk has free
    is a DataError naming ``what`` and the size, before anything is written, as is a disk
    that fills up while writing: ids too large for the disk are too large to hold in memory."""
    folder = root
    free = free_bytes(folder)
    if needed > free:
        raise no_room(folder, needed=needed, free=free, what=what)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".part", dir=folder)
        try:
            with os.fdopen(fd, "wb") as out:
                write(out)
            os.replace(tmp, folder / f"{key}.int32")
        finally:
            Path(tmp).unlink(missing_ok=True)
        return mapped_ids(folder / f"{key}.int32")
    except OSError as exc:  # only a cache: a failure to write it costs time, not the run
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise no_room(folder, needed=needed, free=free_bytes(folder), what=what) from exc
        unwritable(folder, exc)
    buffer = io.BytesIO()
    write(buffer)
    return torch.from_numpy(np.frombuffer(buffer.getbuffer(), dtype=np.int32).copy())


def unwritable(folder: Path, exc: OSError) -> None:
    print(
        f"rnnlab: cannot write the token cache in {folder} ({exc.strerror or exc}); the data are "
        f"tokenised again by every run. Set {ENV_VAR} to a writable folder",
        file=sys.stderr,
    )


def save(key: str, value: Any, *, root: Path) -> None:
    """Write ``value`` under ``key`` in ``root`` atomically; a place that cannot be written is
    skipped."""
    folder = root
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".part", dir=folder)
        os.close(fd)
        try:
            torch.save(value, tmp)
            os.replace(tmp, folder / f"{key}.pt")
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError as exc:  # only a cache: any failure to write it costs time, not the run
        unwritable(folder, exc)
