"""What can be wrong with a tracking store, said as one paragraph with the fix.

:func:`refuse_unusable` runs before MLflow opens a store, because opening is not harmless:
MLflow creates its ~70 tables (and rnnlab switches the file to WAL) in any sqlite file it is
pointed at, so another application's database must be refused before that, untouched.
:func:`store_error` turns the errors a store raises later (sqlite's ``database or disk is
full`` is an ``OperationalError``, not an ``OSError``) into the same kind of paragraph.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from rnnlab.errors import TrackingError
from rnnlab.tracking.uri import sqlite_path

#: MLflow waits this long for a sqlite write lock (its ``PRAGMA busy_timeout``) before failing
SQLITE_BUSY_TIMEOUT_S = 20
#: MLflow's core tables (created in one transaction); a database with tables, none of
#: these, belongs to another application
MLFLOW_TABLES = {"experiments", "runs"}
#: what MLflow, alembic and sqlite say about a schema that is not the one MLflow expects
SCHEMA_SIGNS = (
    "out-of-date database schema",
    "Can't locate revision",
    "Online migration expected",
    "_alembic_tmp_",
    "duplicate column name",
    "no such column",
    "no such table",
)
SCHEMA_EXISTS = r"\b(table|index) \S+ already exists"
ELSEWHERE = "point tracking.uri / --uri / MLFLOW_TRACKING_URI at another store"


def refuse_unusable(uri: str, *, writes: bool) -> None:
    """A :class:`TrackingError` for a store rnnlab must not (or cannot) open; nothing is
    written to the store by this check."""
    if uri.startswith("file:"):
        raise TrackingError(
            f"The tracking URI {uri} is MLflow's legacy file store, which MLflow 3 keeps in "
            "maintenance mode and refuses to open",
            "Use a database store, e.g. tracking.uri=sqlite:///mlflow.db (or --uri); 'mlflow "
            "migrate-filestore' moves existing runs into one",
        )
    db = sqlite_path(uri)
    if db is None or not db.exists():
        return
    if db.is_dir():
        raise TrackingError(
            f"The tracking store {uri} is a directory, not a sqlite file", ELSEWHERE
        )
    writable = os.access(db, os.W_OK) and os.access(db.parent, os.W_OK)
    if writes and not writable:
        raise TrackingError(
            f"The tracking store {uri} is read-only (sqlite needs to write the file and "
            f"create its journal beside it in {db.parent})",
            f"Make both writable, or {ELSEWHERE}",
        )
    tables = sqlite_tables(db, uri, read_only=not writable)
    if tables and not MLFLOW_TABLES & tables:
        shown = ", ".join(sorted(tables)[:5]) + (" ..." if len(tables) > 5 else "")
        raise TrackingError(
            f"The sqlite file {db} is another application's database (tables: {shown}), not "
            "an MLflow store; it was left untouched",
            f"Use a new file for MLflow, e.g. tracking.uri=sqlite:///mlflow.db, or {ELSEWHERE}",
        )


def sqlite_tables(db: Path, uri: str, *, read_only: bool = False) -> set[str]:
    """The table names of the sqlite file ``db`` (read-only); an error if it is not sqlite.

    Read through sqlite alone, never by opening the file: closing any descriptor of a file
    drops every POSIX lock its process holds on it, sqlite's included. A plain ``open`` here,
    in a process with a live connection to the store (a sweep's launcher holds one for the
    parent run), silently released that connection's lock; the next process to close its own
    connection then took itself for the last one and deleted the write-ahead log under the
    live ones: a sweep job's last epochs and its end were lost, and the next job got "disk I/O
    error" (stop 36; sqlite.org/howtocorrupt.html, section 2.2). sqlite reports a file that is
    not a database itself, and opens an empty file as an empty one.
    """
    import sqlite3

    if not os.access(db, os.R_OK):
        raise TrackingError(
            f"Cannot read the tracking store {db}: permission denied",
            f"Check its permissions, or {ELSEWHERE}",
        )
    try:
        with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    except sqlite3.Error as exc:
        if "file is not a database" in str(exc):
            raise TrackingError(
                f"The tracking URI {uri} points at {db}, which is not a sqlite database",
                "Point tracking.uri / --uri / MLFLOW_TRACKING_URI at an MLflow store (e.g. "
                "sqlite:///mlflow.db, created if missing), not at another file",
            ) from exc
        if read_only:  # a WAL store cannot even be read without creating its -shm file
            raise TrackingError(
                f"The tracking store {uri} is read-only, and sqlite cannot open it there ({exc})",
                "Copy the store (the .db file and mlartifacts/) to a writable directory and "
                "point --uri / tracking.uri at the copy",
            ) from exc
        raise store_error(uri, exc) or TrackingError(
            f"Cannot read the sqlite store {db}: {exc}", ELSEWHERE
        ) from exc
    return {name for (name,) in rows}


def store_error(uri: str, exc: BaseException) -> TrackingError | None:
    """The paragraph for a known store failure in ``exc`` (or its causes); None otherwise."""
    text = " ".join(str(e) for e in causes(exc))
    if "database or disk is full" in text:
        return TrackingError(
            f"The tracking store {uri} is full (sqlite: database or disk is full)",
            "Free disk space where the store lives (a run's checkpoints are kept: rnnlab "
            "train resume=RUN_ID continues it), or point tracking.uri at another disk",
        )
    if "readonly database" in text or "read-only file system" in text.lower():
        return TrackingError(
            f"The tracking store {uri} is read-only", f"Make it writable, or {ELSEWHERE}"
        )
    if any(sign in text for sign in SCHEMA_SIGNS) or re.search(SCHEMA_EXISTS, text):
        return schema_error(uri, text)
    if "file is not a database" in text:
        return TrackingError(f"The tracking store {uri} is not a sqlite database", ELSEWHERE)
    if "unable to open database file" in text or "disk I/O error" in text:
        return TrackingError(
            f"sqlite cannot open or read the tracking store {uri} ({text[:200]})",
            f"Check that its file and directory exist and are readable and writable, or {ELSEWHERE}",
        )
    return None


def causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and the chain of exceptions behind it."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def mlflow_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("mlflow")


def schema_error(uri: str, text: str) -> TrackingError:
    """MLflow's complaint about a store's schema (rnnlab's processes create and migrate a
    sqlite store under a lock: this is a store something else migrated meanwhile, or a
    server's database)."""
    return TrackingError(
        f"The schema of the tracking store {uri} is not the one the installed MLflow "
        f"{mlflow_version()} expects ({text[:300]})",
        "For a sqlite store, stop any other MLflow process that opened it (mlflow ui, a "
        "script) and run again: rnnlab upgrades or repairs the schema under a lock, after "
        "copying the store to <store>.bak-<time>. For a server's database, run 'mlflow db "
        "upgrade' on it after a backup",
    )
