"""Where a run's data come from, as the run records it: one split, its digest, its origin.

Kept apart from the tasks (and free of torch), so the tracking process records a run's
dataset inputs without importing a model library.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DataSource:
    """One split of the data a task reads, as a run records it (an MLflow dataset input)."""

    #: the corpus or generator, e.g. ``ptb``, ``multi30k``, ``bitcount``
    name: str
    #: ``train``, ``validation`` or ``test`` (MLflow's dataset context)
    split: str
    #: sha256 of the files read, or of the generator and its seed
    digest: str
    #: where the data come from: URL(s) or path(s)
    source: str
    #: more about the split, kept in the dataset's profile (e.g. the rows a split holds)
    details: dict[str, str] = field(default_factory=dict)
