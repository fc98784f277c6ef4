"""What training writes to, as a protocol: :mod:`rnnlab.tracking` implements it with MLflow.

Training never imports a tracking backend. It hands metrics, tags and checkpoints to a
Recorder; tests and benchmarks pass a plain in-memory one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol


class Recorder(Protocol):
    """Where a run's metrics, tags and resumable checkpoints go."""

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        """Record ``metrics`` at ``step`` (buffering is the recorder's business)."""

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Record run tags."""

    def write_checkpoint(self, name: str, write: Callable[[Path], Path]) -> None:
        """Store checkpoint ``name`` (``checkpoints/<name>.pt``) that ``write(path)`` saves.

        Every metric recorded so far must be stored first, so a checkpoint never runs ahead
        of the metrics it implies (a resumed run then loses none and repeats none).
        """


class MemoryRecorder:
    """A Recorder that keeps everything in memory (benchmarks, tests)."""

    def __init__(self, checkpoint_dir: Path | None = None) -> None:
        self.metrics: list[tuple[int, dict[str, float]]] = []
        self.tags: dict[str, str] = {}
        self.checkpoint_dir = checkpoint_dir

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        self.metrics.append((step, dict(metrics)))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.tags.update(tags)

    def write_checkpoint(self, name: str, write: Callable[[Path], Path]) -> None:
        if self.checkpoint_dir is not None:
            write(self.checkpoint_dir / f"{name}.pt")


class NullRecorder:
    """A Recorder that keeps nothing: the other ranks of a data-parallel run, where only
    rank 0 talks to the tracking store."""

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        return None

    def set_tags(self, tags: Mapping[str, str]) -> None:
        return None

    def write_checkpoint(self, name: str, write: Callable[[Path], Path]) -> None:
        return None
