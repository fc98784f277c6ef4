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
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import sys

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


if __name__ == "__main__":
    logging.disable(logging.CRITICAL)
    after = int(sys.argv[2]) if len(sys.argv) > 2 else None
    new = sys.argv[3:] == ["new"]
    if not new:
        build(sys.argv[1])
    migrate_until_killed(sys.argv[1], after=after, new=new)
