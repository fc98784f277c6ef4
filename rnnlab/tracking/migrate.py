"""Upgrading or repairing an existing sqlite store's schema, under its schema lock
(:func:`rnnlab.tracking.schema_lock.guard` calls :func:`migrate`).

The store is first copied to ``<db>.bak-<time>``. The migration then runs on a second copy,
with MLflow's own functions (``_upgrade_db``; ``_initialize_tables`` from no version), and
only a copy that reached the head revision is written back over the store (sqlite's backup
API, which keeps a WAL store consistent): a migration that fails leaves the store as it was.

A half-migrated store (:mod:`rnnlab.tracking.schema`) is finished or redone on that copy:

1. a leftover ``_alembic_tmp_<table>`` is dropped when ``<table>`` is still there (the batch
   copy stopped before the swap: the table holds every row), else renamed to ``<table>``;
2. the migration is run again from the version row;
3. if that fails, the row does not match the tables: MLflow's migrations are replayed on an
   empty in-memory database, and the copy is stamped with each revision whose tables,
   columns and indexes are exactly the copy's, and migrated from there, until one succeeds;
4. a store that holds no runs (a new store the race broke) is made anew instead.

MLflow's migrations on sqlite commit as they go (a DDL statement outside a transaction is
committed at once; a step's revision is written into the version row after its changes): an
interrupted migration leaves the version row at or behind the tables, and the step it was in
partly applied. Killed at 12 points each of an upgrade and a creation, every store came back
(the slow ``test_migration_killed_anywhere_is_repaired``); a store whose tables match no
revision and that holds runs is left as it was, with an error naming the backup.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from rnnlab.tracking.schema import (
    INTERRUPTED,
    TMP_PREFIX,
    Schema,
    read_schema,
    revisions,
    say,
    unrepairable,
)

#: tables, columns and indexes: what identifies a revision's schema
Fingerprint = dict[str, tuple[frozenset[str], frozenset[str]]]
UPGRADED = "upgraded it"
#: rows that MLflow itself writes into a new store (the default experiment and workspace)
CREATION_ROWS = {"experiments": "experiment_id != 0", "workspaces": "name != 'default'"}


def migrate(db: Path, *, uri: str, schema: Schema) -> None:
    """Bring the existing store ``db`` to MLflow's head revision, backed up first; one line
    says what was done and where the backup is."""
    backup = db.with_name(f"{db.name}.bak-{time.strftime('%Y%m%d-%H%M%S')}")
    copy_database(db, backup)
    work = db.with_name(f"{db.name}.migrating")
    try:
        done = migrated_copy(backup, work, schema)
        copy_database(work, db)
    except Exception as exc:
        raise unrepairable(uri, backup, exc) from exc
    finally:
        remove_database(work)
    if done.startswith(UPGRADED):
        state = f"was at schema {schema.version}, behind the installed MLflow"
    else:  # leftover tables, or a version row the tables did not match
        leftovers = f", leftover tables {', '.join(schema.leftovers)}" if schema.leftovers else ""
        state = f"was half-migrated ({INTERRUPTED}: version row {schema.version}{leftovers})"
    say(f"rnnlab: the tracking store {db} {state}: {done}; a copy of it as it was: {backup}")


def migrated_copy(source: Path, work: Path, schema: Schema) -> str:
    """Migrate a copy of ``source`` into ``work`` by the first plan that works; what it did."""
    _, head = revisions()
    empty = not holds_data(source)
    if schema.half_migrated and empty:
        make_new(work)
        return f"it held no runs, so it was made anew at {head}"
    error: Exception | None = None
    for done, start in plans(source, schema):
        copy_database(source, work)
        try:
            clear_leftovers(work)
            if start != schema.version:
                stamp(work, start)
            upgrade(work, start)
            return f"{done} to {head}"
        except Exception as exc:  # the next plan starts from a new copy
            error = error or exc
    if empty:
        make_new(work)
        return f"it could not be migrated and held no runs, so it was made anew at {head}"
    assert error is not None
    raise error


def plans(source: Path, schema: Schema) -> Iterator[tuple[str, str | None]]:
    """(what it does, the revision to migrate from): the version row first, then each
    revision whose schema is the store's (computed only if the first plan failed)."""
    version = schema.version
    if schema.half_migrated:
        yield f"finished the migration from {version}", version
    else:
        yield UPGRADED, version
    with contextlib.closing(sqlite3.connect(source)) as conn:
        actual = without_leftovers(fingerprint(conn))
    for revision, rung in ladder():
        if rung == actual and revision != version:
            yield f"its tables were at {revision}: redid the migration from there", revision


# -- the steps ---------------------------------------------------------------------------
def copy_database(source: Path, target: Path) -> None:
    """``target`` made a page-for-page copy of ``source`` with sqlite's backup API (a WAL
    file's recent writes included; a store being replaced keeps its WAL consistent)."""
    with (
        contextlib.closing(sqlite3.connect(source)) as src,
        contextlib.closing(sqlite3.connect(target, timeout=20)) as dst,
    ):
        src.backup(dst)


def clear_leftovers(db: Path) -> None:
    """Drop each ``_alembic_tmp_<table>`` whose table is still there; rename the others."""
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        tables = {t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for tmp in sorted(t for t in tables if t.startswith(TMP_PREFIX)):
            table = tmp.removeprefix(TMP_PREFIX)
            if table in tables:
                conn.execute(f'DROP TABLE "{tmp}"')
            else:
                conn.execute(f'ALTER TABLE "{tmp}" RENAME TO "{table}"')


def stamp(db: Path, revision: str | None) -> None:
    """Set the alembic version row of ``db`` (none for ``revision`` None)."""
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL, "
            "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
        )
        conn.execute("DELETE FROM alembic_version")
        if revision is not None:
            conn.execute("INSERT INTO alembic_version VALUES (?)", (revision,))


def with_engine(db: Path, body: Callable[..., None]) -> None:
    """``body(engine)`` on an engine of ``db``, without alembic's warnings about how it
    recreates sqlite tables (MLflow's migrations, not the user's to act on)."""
    import warnings

    from mlflow.store.db.utils import create_sqlalchemy_engine

    engine = create_sqlalchemy_engine(f"sqlite:///{db}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            body(engine)
    finally:
        engine.dispose()


def upgrade(db: Path, start: str | None) -> None:
    """MLflow's migrations from ``start`` to its head, as ``mlflow db upgrade`` runs them (from
    no version: its initial tables first, as a new store gets them)."""
    from mlflow.store.db.utils import _initialize_tables, _upgrade_db

    with_engine(db, _initialize_tables if start is None else _upgrade_db)
    _, head = revisions()
    if read_schema(db).version != head:
        raise RuntimeError(f"the migration ended at {read_schema(db).version}, not at {head}")


def make_new(db: Path) -> None:
    """A new store at ``db``, as MLflow creates one."""
    from mlflow.store.db.utils import _initialize_tables

    remove_database(db)
    with_engine(db, _initialize_tables)


def remove_database(db: Path) -> None:
    """``db`` and its journal files (a stale ``-wal`` would be replayed into a new file)."""
    for path in (db, *db.parent.glob(f"{db.name}-*")):
        path.unlink(missing_ok=True)


def holds_data(db: Path) -> bool:
    """Whether ``db`` holds anything a user made: a row in any table but alembic's, beyond
    the default experiment and workspace that MLflow writes into every new store."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            if table.startswith(("alembic_", TMP_PREFIX, "sqlite_")):
                continue
            where = CREATION_ROWS.get(table, "1")
            if conn.execute(f'SELECT 1 FROM "{table}" WHERE {where} LIMIT 1').fetchone():
                return True
    return False


# -- which revision a store's tables are at ------------------------------------------------
def fingerprint(conn: sqlite3.Connection) -> Fingerprint:
    """Each table's columns and named indexes (alembic's and sqlite's own tables aside)."""
    names = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    result: Fingerprint = {}
    for table in names:
        if table.startswith(("alembic_", "sqlite_")):
            continue
        columns = frozenset(row[1] for row in conn.execute(f'PRAGMA table_info("{table}")'))
        indexes = frozenset(
            row[1]
            for row in conn.execute(f'PRAGMA index_list("{table}")')
            if not row[1].startswith("sqlite_autoindex_")
        )
        result[table] = (columns, indexes)
    return result


def without_leftovers(tables: Fingerprint) -> Fingerprint:
    """``tables`` as :func:`clear_leftovers` leaves them."""
    result = {t: v for t, v in tables.items() if not t.startswith(TMP_PREFIX)}
    for tmp, value in tables.items():
        if tmp.startswith(TMP_PREFIX) and tmp.removeprefix(TMP_PREFIX) not in result:
            result[tmp.removeprefix(TMP_PREFIX)] = value
    return result


@functools.cache
def ladder() -> tuple[tuple[str | None, Fingerprint], ...]:
    """The schema after MLflow's initial tables (None) and after each of its revisions, in
    order: its migrations replayed on an empty in-memory database (seconds, once a process)."""
    import warnings

    import sqlalchemy
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from mlflow.store.db.base_sql_model import Base
    from mlflow.store.db.utils import _get_alembic_config
    from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase

    steps = list(ScriptDirectory.from_config(_get_alembic_config("")).walk_revisions())[::-1]
    engine = sqlalchemy.create_engine("sqlite://")
    try:
        with engine.connect() as conn, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # alembic's, as in with_engine
            raw = conn.connection.dbapi_connection
            InitialBase.metadata.create_all(conn)
            rungs = [(None, fingerprint(raw))]
            options = {"render_as_batch": True, "target_metadata": Base.metadata}
            with Operations.context(MigrationContext.configure(conn, opts=options)):
                for step in steps:
                    step.module.upgrade()
                    rungs.append((step.revision, fingerprint(raw)))
    finally:
        engine.dispose()
    return tuple(rungs)
