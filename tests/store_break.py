"""Makes a sqlite store half-migrated the way issue 28 found one, for the schema tests:
``python tests/store_break.py DB``.

The store is made at MLflow's schema revision ``a8c4a736bde6`` (MLflow 1.14's) with an
experiment of two runs in it (params, tags, metrics), written with plain SQL for the tables
of that revision; then MLflow's own upgrade of it is started, and this process SIGKILLs
itself the moment sqlite has created ``_alembic_tmp_latest_metrics`` (the first step's batch
copy of the table, committed before the copy's data). What is left: version row
``a8c4a736bde6``, a leftover ``_alembic_tmp_latest_metrics``, every run.

``python tests/store_break.py DB N`` kills the upgrade after its ``N``-th SQL statement
instead, and ``python tests/store_break.py DB N new`` kills MLflow's creation of a new store
there (the slow test that kills them everywhere).

``python tests/store_break.py --fixture tests/fixtures/stores/half_migrated.db`` writes the
committed copy of the first store that the fast test starts from (made for real, then
vacuumed with 512-byte pages: 21 kB); a slow test checks that a store made now is the same.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

REVISION = "a8c4a736bde6"
LEFTOVER = "_alembic_tmp_latest_metrics"
EXPERIMENT = "before-the-upgrade"
#: run id -> (run name, its one metric's value)
RUNS = {"a" * 32: ("old-run-1", 0.25), "b" * 32: ("old-run-2", 0.5)}


def build(db: str) -> None:
    """The store at ``REVISION``, with ``RUNS`` in experiment ``EXPERIMENT``."""
    from alembic import command
    from mlflow.store.db.utils import _get_alembic_config, create_sqlalchemy_engine
    from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase

    engine = create_sqlalchemy_engine(f"sqlite:///{db}")
    InitialBase.metadata.create_all(engine)
    config = _get_alembic_config(str(engine.url))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, REVISION)
    engine.dispose()
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO experiments VALUES (0, 'Default', 'mlruns/0', 'active'), "
            f"(1, '{EXPERIMENT}', 'mlruns/1', 'active')"
        )
        for run_id, (name, value) in RUNS.items():
            conn.execute(
                "INSERT INTO runs VALUES (?, ?, 'LOCAL', 'x', '', 'me', 'FINISHED', 1000, "
                "2000, '', 'active', ?, 1)",
                (run_id, name, f"mlruns/1/{run_id}/artifacts"),
            )
            conn.execute("INSERT INTO params VALUES ('seed', '1', ?)", (run_id,))
            conn.execute("INSERT INTO tags VALUES ('mlflow.runName', ?, ?)", (name, run_id))
            for table in ("metrics", "latest_metrics"):
                conn.execute(
                    f"INSERT INTO {table} (key, value, timestamp, step, is_nan, run_uuid) "
                    "VALUES ('val/loss', ?, 1500, 3, 0, ?)",
                    (value, run_id),
                )


def migrate_until_killed(db: str, *, after: int | None = None, new: bool = False) -> None:
    """MLflow's upgrade of ``db`` (its creation of a new store with ``new``), SIGKILLed once
    ``LEFTOVER`` has been created, or after its ``after``-th statement."""
    from mlflow.store.db.utils import _initialize_tables, _upgrade_db, create_sqlalchemy_engine
    from sqlalchemy import event

    engine = create_sqlalchemy_engine(f"sqlite:///{db}")
    statements = 0

    @event.listens_for(engine, "after_cursor_execute")
    def kill_there(conn, cursor, statement, *args):
        nonlocal statements
        statements += 1
        if statements == after or (
            after is None and statement.lstrip().startswith(f"CREATE TABLE {LEFTOVER}")
        ):
            os.kill(os.getpid(), signal.SIGKILL)

    (_initialize_tables if new else _upgrade_db)(engine)
    sys.exit(f"the migration finished after {statements} statements, never killed")


def write_fixture(path: Path) -> None:
    """The store a killed upgrade leaves, made for real in a process of its own, saved at
    ``path`` compactly (same tables, rows and version; 512-byte pages, vacuumed)."""
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "mlflow.db"
        made = subprocess.run([sys.executable, __file__, str(db)], capture_output=True)
        if made.returncode != -signal.SIGKILL:
            sys.exit(made.stderr.decode()[-3000:] or "the upgrade was not killed")
        with contextlib.closing(sqlite3.connect(db)) as conn:
            conn.execute("PRAGMA page_size=512")
            conn.execute("VACUUM")
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(db, path)


def contents(db: Path) -> dict[str, list[tuple]]:
    """Everything in ``db``: its schema (sqlite_master) and every table's rows, sorted."""
    with contextlib.closing(sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True)) as c:
        master = c.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
        found = {"sqlite_master": sorted(master, key=repr)}
        for (table,) in c.execute("SELECT name FROM sqlite_master WHERE type='table'"):
            found[table] = sorted(c.execute(f'SELECT * FROM "{table}"').fetchall(), key=repr)
    return found


if __name__ == "__main__":
    logging.disable(logging.CRITICAL)
    if sys.argv[1] == "--fixture":
        write_fixture(Path(sys.argv[2]))
        sys.exit(0)
    after = int(sys.argv[2]) if len(sys.argv) > 2 else None
    new = sys.argv[3:] == ["new"]
    if not new:
        build(sys.argv[1])
    migrate_until_killed(sys.argv[1], after=after, new=new)
