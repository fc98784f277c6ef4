"""What a sqlite store's schema is, read without MLflow: its tables, its alembic version
row, and MLflow's head revision (from MLflow's migration scripts as text).

:mod:`rnnlab.tracking.schema_lock` decides from this whether a store can be opened as it is
(the common case: at MLflow's head revision, nothing left over), or must be created,
upgraded or repaired (:mod:`rnnlab.tracking.migrate`) under a lock first; a store whose
revision the installed MLflow does not know was written by a newer one and is refused.
"""

from __future__ import annotations

import contextlib
import functools
import re
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

from rnnlab.errors import TrackingError
from rnnlab.tracking.store_errors import mlflow_version

#: alembic's batch mode copies a table through ``_alembic_tmp_<table>``; one left over means
#: a migration stopped half-way
TMP_PREFIX = "_alembic_tmp_"
INTERRUPTED = "the schema migration of this store was interrupted"
#: ``revision = "abc123"`` (or ``revision: str = ...``) in an alembic script
REVISION = r"^revision\b[^=\n]*=\s*['\"](\w+)['\"]"
DOWN_REVISION = r"^down_revision\b[^=\n]*=(.*)$"
ELSEWHERE = "point tracking.uri / --uri / MLFLOW_TRACKING_URI at another store"


@dataclass(frozen=True)
class Schema:
    """What a sqlite store's schema is, as read by :func:`read_schema`."""

    tables: frozenset[str]
    versions: tuple[str, ...]  # the rows of alembic_version (one, for a migrated store)

    @property
    def version(self) -> str | None:
        return self.versions[0] if len(self.versions) == 1 else None

    @property
    def leftovers(self) -> list[str]:
        return sorted(t for t in self.tables if t.startswith(TMP_PREFIX))

    @property
    def new(self) -> bool:
        """No MLflow table and no version yet (a first attempt that failed at once may
        leave alembic's empty version table)."""
        return not self.versions and all(t.startswith("alembic_") for t in self.tables)

    @property
    def half_migrated(self) -> bool:
        """A migration stopped half-way: leftover tables, or tables without one version."""
        return not self.new and (bool(self.leftovers) or self.version is None)


@functools.cache
def revisions() -> tuple[frozenset[str], str | None]:
    """MLflow's schema revisions and its head revision (None if it has several), read from
    its migration scripts as text: asking alembic imports and runs every script (tenths of
    a second), and the training side of ``rnnlab train`` must not import MLflow at all."""
    import importlib.util

    spec = importlib.util.find_spec("mlflow")
    if spec is None or not spec.submodule_search_locations:
        return frozenset(), None
    folder = Path(spec.submodule_search_locations[0], "store", "db_migrations", "versions")
    known: set[str] = set()
    parents: set[str] = set()
    for script in folder.glob("*.py"):
        with script.open(encoding="utf-8") as handle:
            text = handle.read(4096)  # the identifiers follow the docstring
            if re.search(DOWN_REVISION, text, re.MULTILINE) is None:
                text += handle.read()
        revision = re.search(REVISION, text, re.MULTILINE)
        down = re.search(DOWN_REVISION, text, re.MULTILINE)
        if revision is None:
            continue
        known.add(revision[1])
        if down is not None:
            parents.update(re.findall(r"['\"](\w+)['\"]", down[1]))
    heads = known - parents
    return frozenset(known), (heads.pop() if len(heads) == 1 else None)


def read_schema(db: Path, *, timeout: float = 5.0) -> Schema:
    """The tables and alembic version rows of ``db`` (read-only; none for a missing or empty
    file). Raises sqlite's "database is locked" after ``timeout`` seconds of a writer holding
    the file (a migration in progress, before the store is in WAL mode)."""
    if not db.exists() or db.stat().st_size == 0:
        return Schema(frozenset(), ())
    ro = f"{db.absolute().as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(ro, uri=True, timeout=timeout)) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
        tables = frozenset(name for (name,) in rows)
        versions: tuple[str, ...] = ()
        if "alembic_version" in tables:
            versions = tuple(v for (v,) in conn.execute("SELECT version_num FROM alembic_version"))
    return Schema(tables, versions)


def up_to_date(schema: Schema, *, uri: str) -> bool:
    """Whether MLflow will open the store without touching its schema; a store written by a
    newer MLflow is refused here, before anything is written to it."""
    known, head = revisions()
    version = schema.version
    if version is not None and known and version not in known:
        raise newer_store(uri, version)
    return head is not None and version == head and not schema.leftovers


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# -- errors ------------------------------------------------------------------------------
def newer_store(uri: str, version: str) -> TrackingError:
    return TrackingError(
        f"The tracking store {uri} was written by a newer MLflow: its schema revision "
        f"{version} is not one that the installed MLflow {mlflow_version()} knows. It was "
        "left untouched",
        f"Install the MLflow that wrote it (pip install -U mlflow), or {ELSEWHERE}",
    )


def unrepairable(uri: str, backup: Path, cause: BaseException) -> TrackingError:
    text = str(cause).strip().splitlines()[0][:300] if str(cause).strip() else ""
    return TrackingError(
        f"The tracking store {uri} is half-migrated: {INTERRUPTED}, and rnnlab could not "
        f"finish or redo it ({type(cause).__name__}: {text}). The store was left as it was, "
        f"and a copy of it is at {backup}",
        "Keep the copy. Start a new store (move the .db file aside, or point tracking.uri / "
        "--uri / MLFLOW_TRACKING_URI elsewhere); the old runs can be read from the copy by "
        "the MLflow version that last migrated it cleanly",
    )
