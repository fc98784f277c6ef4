"""Checkpoint files: written atomically, read with ``weights_only=True``.

A checkpoint is a plain dict of tensors and simple values tagged with
``format = "rnnlab-checkpoint"``; anything else is refused with a clear message.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from rnnlab.errors import RnnlabError
from rnnlab.train.faults import fault_point

FORMAT = "rnnlab-checkpoint"
VERSION = 1


def save_checkpoint(path: Path, **payload: Any) -> Path:
    """Write ``payload`` to ``path`` via a temp file and rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*"):  # left by a process killed mid-write;
        stale.unlink(missing_ok=True)  # one writer per run (the lease), so none is in use
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    fault_point("checkpoint.temp")
    try:
        try:
            torch.save({"format": FORMAT, "version": VERSION, **payload}, tmp)
            fault_point("checkpoint.rename")
            os.replace(tmp, path)
            fault_point("checkpoint.renamed")
        except (OSError, RuntimeError) as exc:
            free = shutil.disk_usage(path.parent).free / 1e6
            raise RnnlabError(
                f"Could not write the checkpoint {path} ({free:.1f} MB free on that disk): "
                f"{str(exc).splitlines()[0]}",
                "Free disk space (or check permissions) where the tracking store keeps "
                "artifacts, or point tracking.uri at another disk; the previous checkpoint "
                "is intact",
            ) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, refusing anything else."""
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise RnnlabError(
            f"{path} is not a readable rnnlab checkpoint ({type(exc).__name__}: {exc})",
            "Use a checkpoint written by rnnlab, or re-run the training",
        ) from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise RnnlabError(
            f"{path} is not an rnnlab checkpoint (no '{FORMAT}' marker)",
            "Use a checkpoint written by rnnlab, or re-run the training",
        )
    return data
