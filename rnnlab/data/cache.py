"""A cache of tokenised data, keyed by the digest of the text and the options that read it.

A sweep's jobs read the same corpus with the same options; the first tokenises, the others
load the ids (``torch.load`` of a few hundred MB takes well under a second). Entries live in
``$RNNLAB_CACHE``, else ``~/.cache/rnnlab``; one file per key, written to a temp file and
renamed, so parallel jobs never read a half-written entry. A cache that cannot be written
(read-only, full) costs only the time: the run goes on and says so once on stderr.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from rnnlab.errors import WRITE_ERRNOS

ENV_VAR = "RNNLAB_CACHE"
#: bump when the layout of cached entries changes, so old entries are never misread
FORMAT = 1


def cache_dir() -> Path:
    """``$RNNLAB_CACHE``, else ``~/.cache/rnnlab``."""
    chosen = os.environ.get(ENV_VAR) or Path.home() / ".cache" / "rnnlab"
    return Path(chosen).expanduser()


def cache_key(kind: str, **parts: Any) -> str:
    """One stable name for ``parts`` (digests and options, JSON-serialisable)."""
    text = json.dumps({"kind": kind, "format": FORMAT, **parts}, sort_keys=True)
    return f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:32]}"


def load(key: str) -> Any | None:
    """The entry saved under ``key``, or None when there is none (or it cannot be read)."""
    path = cache_dir() / f"{key}.pt"
    if not path.is_file():
        return None
    try:
        # memory-mapped: a large tensor is paged in as it is read, not loaded whole
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # a damaged entry is rebuilt, not fatal: it is only a cache
        print(f"rnnlab: ignoring the damaged cache entry {path} ({exc})", file=sys.stderr)
        return None


def save(key: str, value: Any) -> None:
    """Write ``value`` under ``key`` atomically; a place that cannot be written is skipped."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".part", dir=folder)
        os.close(fd)
        try:
            torch.save(value, tmp)
            os.replace(tmp, folder / f"{key}.pt")
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        print(
            f"rnnlab: cannot write the token cache in {folder} ({exc.strerror}); the data are "
            f"tokenised again by every run. Set {ENV_VAR} to a writable folder",
            file=sys.stderr,
        )
