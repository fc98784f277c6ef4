"""Stores that fail cleanly: read-only, full mid-run, another application's database left
untouched; experiment names kept inside the artifact root; corpus read errors said as such;
repeatable options that work repeated. Real stores; real processes only where the operating
system's view matters (mounts, a process without root's file-permission override)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sqlite3
import time
from pathlib import Path

from conftest import cli_inprocess, new_store, runs_of
from test_bad_inputs import FAST, mounted  # noqa: F401 - the fixture, for the mount tests

from rnnlab.tracking.store import artifact_folder, experiment_id


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_foreign_sqlite_file_is_refused_untouched(workdir):
    db = workdir / "shop.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO customers (name) VALUES ('ada')")
        conn.commit()
    before = sha256(db)
    for args in (["train", f"tracking.uri=sqlite:///{db}", *FAST], ["runs", "--uri", str(db)]):
        result = cli_inprocess(*args, cwd=workdir)
        assert result.returncode == 2, result.stderr
    result = cli_inprocess("runs", "--uri", f"sqlite:///{db}", cwd=workdir)
    assert "another application's database" in result.stderr
    assert sha256(db) == before
    assert sorted(p.name for p in workdir.iterdir() if p.name.startswith("shop")) == ["shop.db"]
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not WAL
        tables = conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    assert tables == [("customers",)]


def test_experiment_names_stay_inside_the_artifact_root(workdir, client):
    root = workdir / "mlartifacts"
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    for name in ("/tmp/escape", "../../escape", "..", "a/../../b", "ok-name_1.0"):
        folder = artifact_folder(root, name)
        assert folder.is_relative_to(root.resolve()) and folder != root.resolve(), name
        location = client.get_experiment(experiment_id(client, name, uri=uri)).artifact_location
        assert Path(location.removeprefix("file://")).is_relative_to(root.resolve()), location
    assert artifact_folder(root, "ok-name_1.0").name == "ok-name_1.0"


def test_a_run_named_like_a_path_writes_inside_the_store(workdir, empty_store, tmp_path):
    new_store(workdir, empty_store)
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    result = cli_inprocess(
        "train", f"tracking.experiment={outside}", "trainer.max_epochs=1", "device=cpu", cwd=workdir
    )
    assert result.returncode == 0, result.stderr
    assert not outside.exists()
    assert list((workdir / "mlartifacts").glob("*/*/artifacts/config.yaml"))


def test_status_filter_is_repeatable(bitcount_run):
    uri = bitcount_run["uri"]
    both = cli_inprocess(
        "runs",
        "--uri",
        uri,
        "-s",
        "FINISHED",
        "-s",
        "FAILED",
        "--format",
        "csv",
        "-c",
        "status",
        cwd=bitcount_run["workdir"],
    )
    assert both.returncode == 0, both.stderr
    assert both.stdout.split() == ["status", "FINISHED"]
    neither = cli_inprocess(
        "runs",
        "--uri",
        uri,
        "-s",
        "KILLED",
        "-s",
        "FAILED",
        "--format",
        "csv",
        cwd=bitcount_run["workdir"],
    )
    assert neither.returncode == 0 and "FINISHED" not in neither.stdout


def test_read_only_store_is_refused_for_writing_and_said_so(mounted, workdir, empty_store):  # noqa: F811
    store = mounted("ro-store", "size=4m")
    shutil.copyfile(empty_store, store / "mlflow.db")
    os.system(f"mount -o remount,ro {store}")  # noqa: S605 - the test's own tmpfs
    uri = f"sqlite:///{store / 'mlflow.db'}"
    train = cli_inprocess("train", f"tracking.uri={uri}", *FAST, cwd=workdir)
    assert train.returncode == 2, train.stderr
    assert "is read-only" in train.stderr and "Traceback" not in train.stderr
    runs = cli_inprocess("runs", "--uri", uri, cwd=workdir)
    assert runs.returncode in (0, 2), runs.stderr  # sqlite may read it, else says why
    assert "Traceback" not in runs.stderr


def test_full_store_mid_run_ends_failed_keeps_the_checkpoint(mounted, workdir, empty_store):  # noqa: F811
    """The store's disk fills while the run trains: sqlite's "database or disk is full" is
    one paragraph, the run ends FAILED, and its checkpoint (on another disk) is kept."""
    from mlflow.tracking import MlflowClient

    disk = mounted("store-disk", "size=2m")
    shutil.copyfile(empty_store, disk / "mlflow.db")
    uri = f"sqlite:///{disk / 'mlflow.db'}"
    artifacts = workdir / "artifacts"
    MlflowClient(uri).create_experiment("bitcount", artifact_location=artifacts.as_uri())
    args = [f"tracking.uri={uri}", "trainer.max_epochs=3000", "trainer.log_every=1"]
    from test_lease import start

    proc = start(["train", *args, "trainer.checkpoint_every_epochs=5", "device=cpu"], workdir)
    deadline = time.monotonic() + 240
    while not list(artifacts.glob("*/artifacts/checkpoints/last.pt")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    with contextlib.suppress(OSError), (disk / "filler").open("wb") as filler:
        while True:
            filler.write(b"\0" * 65536)  # until the disk is full
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    assert "is full (sqlite: database or disk is full)" in err and "Traceback" not in err
    (disk / "filler").unlink()
    (run,) = runs_of(MlflowClient(uri), "bitcount")
    assert run.info.status == "FAILED"
    assert "database or disk is full" in run.data.tags["failure_reason"]
    assert list(artifacts.glob("*/artifacts/checkpoints/last.pt"))


def test_unreadable_corpus_file_is_a_read_error(workdir, shared_data):
    """Root reads anything; without CAP_DAC_OVERRIDE it meets file permissions like a user."""
    root = workdir / "data"
    shutil.copytree(shared_data / "ptb", root / "ptb")
    (root / "ptb" / "ptb.valid.txt").chmod(0)
    prefix = []
    if os.geteuid() == 0:
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["RNNLAB_DATA"] = str(root)
    done = subprocess.run(
        [*prefix, sys.executable, "-m", "rnnlab.cli", "train", "experiment=ptb_tiny", "device=cpu"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert "Cannot read data file" in done.stderr and "ptb.valid.txt" in done.stderr
    assert "Permission denied" in done.stderr and "chmod" in done.stderr
    assert "disk space" not in done.stderr and "Traceback" not in done.stderr


def test_checking_a_store_keeps_the_locks_of_this_process_s_live_connections(tmp_path, empty_store):
    """The store check runs in processes that already hold a connection to the store (a
    sweep's launcher). It must read the file through sqlite alone: a plain open() and close()
    of the file released every POSIX lock of the process, so another process closing its
    connection took itself for the last one and deleted the write-ahead log under the live
    connection (a sweep lost a job's last epochs and its end, then 'disk I/O error')."""
    import subprocess
    import sys

    from rnnlab.tracking.store import use_wal
    from rnnlab.tracking.store_errors import refuse_unusable

    uri = new_store(tmp_path, empty_store)
    db = tmp_path / "mlflow.db"
    use_wal(db)
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as live:
        live.execute("CREATE TABLE probe (x)")  # a write: the connection is live in the WAL
        live.execute("INSERT INTO probe VALUES (1)")
        refuse_unusable(uri, writes=True)  # the check, in the process that holds `live`
        other = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('SELECT 1 FROM probe'); c.close()"
        subprocess.run([sys.executable, "-c", other, str(db)], check=True, timeout=60)
        # the other process did not take itself for the last: the log is still there
        assert (tmp_path / "mlflow.db-wal").exists()
        live.execute("INSERT INTO probe VALUES (2)")
    with contextlib.closing(sqlite3.connect(db)) as after:
        assert after.execute("SELECT x FROM probe").fetchall() == [(1,), (2,)]
