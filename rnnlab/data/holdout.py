"""A validation split held out of the training file, for corpora that ship only train and test.

``task.valid_fraction=F`` keeps the first ``1 - F`` of the training file's lines for training
and the last ``F`` for validation: the end, not a random sample, because the lines of a text
follow one another and a random sample would put neighbours of training lines in validation.
The vocabulary is then built from the kept lines alone. The two parts are written once into
the cache (``<cache>/heldout/``, named by the file's sha256 and the fraction, written to a temp
file and renamed), so they are files like any other split: fingerprinted, cached, and recorded
as the run's dataset inputs with the line ranges they hold.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from rnnlab.data.corpus import SplitFile
from rnnlab.errors import DataError


def _write_once(path: Path, data: bytes) -> None:
    if path.is_file() and path.stat().st_size == len(data):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def hold_out(train: SplitFile, fraction: float, *, root: Path) -> tuple[SplitFile, SplitFile]:
    """``train`` cut into (train, val) by line: the last ``fraction`` of lines is val."""
    lines = train.path.read_bytes().splitlines(keepends=True)
    held = round(len(lines) * fraction)
    if held < 1 or held >= len(lines):
        raise DataError(
            f"task.valid_fraction={fraction} of {train.path} ({len(lines)} lines) leaves "
            f"{held} lines for validation and {len(lines) - held} for training",
            "Use a fraction that leaves both parts at least one line (0.05-0.2 is usual), or "
            "name a validation file with task.valid",
        )
    cut = len(lines) - held
    folder = root / "heldout" / f"{train.digest[:24]}-{fraction:g}"
    parts = {}
    for split, chunk, first, last in (
        ("train", lines[:cut], 1, cut),
        ("val", lines[cut:], cut + 1, len(lines)),
    ):
        data = b"".join(chunk)
        path = folder / f"{split}.txt"
        _write_once(path, data)
        source = f"{train.source} (lines {first}-{last}, task.valid_fraction={fraction:g})"
        digest = hashlib.sha256(data).hexdigest()
        parts[split] = SplitFile(train.corpus, split, path, digest, source)
    return parts["train"], parts["val"]
