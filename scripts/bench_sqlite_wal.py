"""Parallel writers on one sqlite MLflow store: rollback journal (MLflow's default) vs WAL.

Each of PROCESSES worker processes writes RUNS_PER_PROCESS runs through rnnlab's RunLogger
with a flush after every step (the worst case for lock contention), first into a store left in
rollback-journal mode, then into one switched to WAL as rnnlab does. Prints both wall times,
their ratio, and whether any write failed or any metric went missing.

    .venv/bin/python scripts/bench_sqlite_wal.py
"""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

PROCESSES = 6
RUNS_PER_PROCESS = 2
STEPS = 40


def write_runs(args: tuple[str, int, bool]) -> list[str]:
    uri, worker, wal = args
    from rnnlab.tracking import store

    errors = []
    with mock.patch.object(store, "use_wal", store.use_wal if wal else lambda db: None):
        for i in range(RUNS_PER_PROCESS):
            try:
                logger = store.RunLogger(
                    uri=uri, experiment="bench", run_name=f"w{worker}-{i}", flush_every_s=0.0
                )
                logger.log_params({f"p{k}": k for k in range(50)})
                for step in range(STEPS):
                    logger.log_metrics({"a": step, "b": 2.0 * step}, step=step)
                logger.end()
            except Exception as exc:  # counted and reported, never hidden
                errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
    return errors


def trial(root: Path, *, wal: bool) -> tuple[float, list[str], int]:
    from mlflow.tracking import MlflowClient

    from rnnlab.tracking.store import connect

    db = root / ("wal.db" if wal else "journal.db")
    uri = f"sqlite:///{db}"
    with mock.patch("rnnlab.tracking.store.use_wal", lambda path: None):
        connect(uri)  # create the schema before timing
    if wal:
        from rnnlab.tracking.store import use_wal

        use_wal(db)
    with sqlite3.connect(db) as conn:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == ("wal" if wal else "delete"), mode
    start = time.perf_counter()
    with mp.get_context("spawn").Pool(PROCESSES) as pool:
        results = pool.map(write_runs, [(uri, w, wal) for w in range(PROCESSES)])
    seconds = time.perf_counter() - start
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("bench").experiment_id])
    complete = sum(
        r.info.status == "FINISHED" and len(client.get_metric_history(r.info.run_id, "a")) == STEPS
        for r in runs
    )
    return seconds, [e for r in results for e in r], complete


def main() -> int:
    expected = PROCESSES * RUNS_PER_PROCESS
    with tempfile.TemporaryDirectory(prefix="rnnlab-bench-") as tmp:
        rows = {mode: trial(Path(tmp), wal=mode == "wal") for mode in ("journal", "wal")}
    for mode, (seconds, errors, complete) in rows.items():
        print(
            f"{mode:8s} {seconds:6.1f} s  complete runs {complete}/{expected}  "
            f"failed writes {len(errors)} {errors[:2]}"
        )
    ratio = rows["journal"][0] / rows["wal"][0]
    print(f"journal / wal wall time: {ratio:.2f}x ({PROCESSES} processes, {STEPS} flushes a run)")
    ok = all(not errors and complete == expected for _, errors, complete in rows.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
