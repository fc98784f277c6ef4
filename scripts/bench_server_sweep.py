"""An 8-job joblib sweep (tests/test_server.py's, on 4 workers) against three stores, side by
side: a sqlite file (no server, rnnlab's default), ``rnnlab server --auth`` on that sqlite, and
``rnnlab server --auth`` on a throwaway PostgreSQL cluster. Times the sweep only (server
start-up is printed apart), checks that every store holds 8 FINISHED runs, and prints a RATIO
line: the PostgreSQL server's wall time over the sqlite file's.

    .venv/bin/python scripts/bench_server_sweep.py            # 8 jobs x 30 epochs
    .venv/bin/python scripts/bench_server_sweep.py --quick    # 8 jobs x 3 epochs
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from servers import (  # noqa: E402 - the tests' throwaway servers
    ADMIN_PASSWORD,
    postgres_bin,
    postgres_cluster,
    rnnlab_server,
)

JOBS = 8
N_JOBS = 4


def sweep(folder: Path, *, epochs: int, env: dict[str, str]) -> float:
    """Wall seconds of the sweep, run as a user runs it (``rnnlab train -m``)."""
    folder.mkdir()
    args = ["train", "-m", "hydra/launcher=joblib", f"hydra.launcher.n_jobs={N_JOBS}"]
    args += [f"seed={','.join(str(s) for s in range(1, JOBS + 1))}"]
    args += [f"trainer.max_epochs={epochs}", "device=cpu"]
    base = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "rnnlab.cli", *args],
        cwd=folder,
        env={**base, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", **env},
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"sweep failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def finished(uri: str, env: dict[str, str]) -> int:
    """FINISHED children of the sweep in ``uri`` (the parent run excluded)."""
    from mlflow.tracking import MlflowClient

    os.environ.update(env)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("bitcount")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    return sum(r.info.status == "FINISHED" and "mlflow.parentRunId" in r.data.tags for r in runs)


def through_server(
    name: str, store: str, tmp: Path, epochs: int, rows: dict[str, tuple[float, int]]
) -> None:
    start = time.perf_counter()
    with rnnlab_server(store, tmp / f"{name}-artifacts", tmp / f"{name}.log") as url:
        print(f"{name}: server up in {time.perf_counter() - start:.1f} s", flush=True)
        env = {
            "MLFLOW_TRACKING_URI": url,
            "MLFLOW_TRACKING_USERNAME": "admin",
            "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD,
        }
        seconds = sweep(tmp / name, epochs=epochs, env=env)
        rows[name] = (seconds, finished(url, env))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs a job instead of 30")
    epochs = 3 if parser.parse_args().quick else 30
    bindir = postgres_bin()
    if bindir is None:
        print("skipped: PostgreSQL is not installed (no initdb): apt-get install postgresql")
        return 0  # make bench goes on with the other benchmarks
    rows: dict[str, tuple[float, int]] = {}
    with tempfile.TemporaryDirectory(prefix="rnnlab-bench-server-") as name:
        tmp = Path(name)
        db = f"sqlite:///{tmp / 'file' / 'mlflow.db'}"
        rows["sqlite file"] = (
            sweep(tmp / "file", epochs=epochs, env={"MLFLOW_TRACKING_URI": db}),
            finished(db, {}),
        )
        through_server("sqlite server", f"sqlite:///{tmp / 'server.db'}", tmp, epochs, rows)
        with postgres_cluster(bindir) as store:
            through_server("postgres server", store, tmp, epochs, rows)
    print(f"{JOBS} jobs x {epochs} epochs, joblib n_jobs={N_JOBS}, tiny bitcount, device=cpu")
    for label, (seconds, done) in rows.items():
        print(f"  {label:16s} {seconds:7.1f} s   FINISHED {done}/{JOBS}")
    ratio = rows["postgres server"][0] / rows["sqlite file"][0]
    print(f"RATIO postgres_server_vs_sqlite_file={ratio:.2f}")  # wall time, 8-job sweep
    return 0 if all(done == JOBS for _, done in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
