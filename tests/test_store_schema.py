"""Many processes, one sqlite store (issue 28): a new store's schema is created by one process
under an OS lock while the others wait; a half-migrated store is repaired after a backup, its
runs kept; a store from a newer MLflow is refused untouched; a lock held past the timeout is
its own error.

Real processes, held where they open the store (``RNNLAB_HOLD=store.open:PATH``,
rnnlab/train/faults.py) until all have come, then released together by the test creating
``PATH``: no sleeps.
In ``make test``: the store's opening raced by four cheap processes in two rounds (each
imports MLflow once, then meets a new store per round), and ``rnnlab train`` with ``rnnlab
runs`` meeting a half-migrated store at once. ``slow``: four ``rnnlab train`` and
``rnnlab runs`` on a new store, the issue's four trains twenty times, and MLflow's migration
killed at 24 points (docs/development.md says why).
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import store_break
from conftest import cli_inprocess, new_store, runs_of
from test_bad_inputs import mounted  # noqa: F401 - the fixture, for the read-only mount
from test_lease import start

from rnnlab.tracking.lease import release_os_lock, take_os_lock
from rnnlab.tracking.schema import read_schema, revisions

#: no model: not what these tests are about, and its tracking process then never loads torch
TRAIN = ["train", "task=bitcount", "trainer.max_epochs=1", "device=cpu", "tracking.log_model=false"]
#: opens a new store per round through rnnlab's own path (rnnlab.tracking.store.connect),
#: held at each round's opening until the test releases the round: argv = ROOT ROUNDS
OPEN_ROUNDS = """
import os, sys
from pathlib import Path
from rnnlab.tracking.store import connect
root, rounds = Path(sys.argv[1]), int(sys.argv[2])
for r in range(rounds):
    os.environ["RNNLAB_HOLD"] = f"store.open:{root}/release{r}"
    connect(f"sqlite:///{root}/store{r}/mlflow.db", writes=True)
    print("opened", r, flush=True)
"""


def hold(release: Path) -> dict[str, str]:
    """Holds a process where it opens its store until ``release`` exists."""
    return {"RNNLAB_HOLD": f"store.open:{release}"}


def release_together(release: Path, procs: list[subprocess.Popen]) -> None:
    """Create ``release`` once every process in ``procs`` is held (each leaves
    ``release.<pid>.reached``); a process that exits before is a failure, said with its
    output."""
    deadline = time.monotonic() + 300
    while len(list(release.parent.glob(f"{release.name}.*.reached"))) < len(procs):
        gone = [p for p in procs if p.poll() is not None]
        assert not gone, finish(gone)
        assert time.monotonic() < deadline, f"{release}: not every process came"
        time.sleep(0.01)
    release.touch()


def finish(procs: list[subprocess.Popen]) -> list[tuple[int, str, str]]:
    """(exit status, stdout, stderr) of each process, once it has exited."""
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        results.append((proc.returncode, out, err))
    return results


def at_head(db: Path) -> bool:
    schema = read_schema(db)
    return schema.version == revisions()[1] and not schema.leftovers


def checksum(folder: Path) -> dict[str, str]:
    """sha256 of every file of the store: the database and anything beside it (journal,
    lock, backup) named after it."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("mlflow.db*")}


def race_trains(
    folder: Path, n: int, *, runs: list[str] | None = None
) -> list[tuple[int, str, str]]:
    """``n`` ``rnnlab train`` (and ``rnnlab runs RUNS``) on the store ``folder/mlflow.db``, from
    one working directory as a sweep from the shell would, released together."""
    folder.mkdir(exist_ok=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    release = folder.parent / f"{folder.name}.release"
    env = hold(release)
    procs = [start([*TRAIN, f"seed={s}", f"tracking.uri={uri}"], folder, env) for s in range(n)]
    if runs is not None:
        procs.append(start(["runs", "--uri", uri, *runs], folder, env))
    release_together(release, procs)
    return finish(procs)


def check_trained(folder: Path, results: list[tuple[int, str, str]], n: int) -> None:
    """Every process succeeded, with ``n`` FINISHED runs in a store at the head."""
    from mlflow.tracking import MlflowClient

    for code, _, err in results:
        assert code == 0, err[-3000:]
        assert "Cannot reach" not in err
    runs = runs_of(MlflowClient(f"sqlite:///{folder / 'mlflow.db'}"), "bitcount")
    assert sorted(r.info.status for r in runs) == ["FINISHED"] * n
    assert at_head(folder / "mlflow.db")


#: the store a killed upgrade leaves (tests/store_break.py --fixture made it; the slow test
#: below checks that a store made now is the same)
HALF_MIGRATED = Path(__file__).parent / "fixtures" / "stores" / "half_migrated.db"


def half_migrated_store(db: Path):
    """The store the issue found, with two runs, at ``db``; its schema as left."""
    shutil.copyfile(HALF_MIGRATED, db)
    broken = read_schema(db)
    assert broken.version == store_break.REVISION and broken.leftovers == [store_break.LEFTOVER]
    return broken


@pytest.mark.slow
def test_the_committed_half_migrated_store_is_what_a_killed_upgrade_leaves(tmp_path):
    """MLflow's upgrade of a store with runs, SIGKILLed once it has created
    _alembic_tmp_latest_metrics, leaves exactly the committed fixture: its tables, version
    row and rows."""
    made = tmp_path / "mlflow.db"
    broke = subprocess.run([sys.executable, store_break.__file__, str(made)], capture_output=True)
    assert broke.returncode == -9, broke.stderr.decode()[-2000:]  # SIGKILLed mid-upgrade
    assert store_break.contents(made) == store_break.contents(HALF_MIGRATED)


@pytest.mark.slow
def test_trains_and_runs_started_together_on_a_new_store(tmp_path):
    """The issue's sweep from the shell with ``rnnlab runs`` among it: four trains and the
    runs table meet a store that does not exist yet; all succeed, four runs FINISHED, and
    the store was created, not repaired (no backup)."""
    folder = tmp_path / "sweep"
    results = race_trains(folder, 4, runs=[])
    check_trained(folder, results, 4)
    assert not list(folder.glob("mlflow.db.bak-*"))


@pytest.mark.slow
def test_four_trains_on_a_new_store_twenty_times(tmp_path):
    """The issue's check whole: 4 ``rnnlab train`` on one new store, 20 times, 0 failures."""
    for round_ in range(20):
        folder = tmp_path / f"round{round_}"
        check_trained(folder, race_trains(folder, 4), 4)
        assert not list(folder.glob("mlflow.db.bak-*"))


@pytest.mark.parametrize("rounds", [pytest.param(1), pytest.param(20, marks=pytest.mark.slow)])
def test_store_opening_race_repeated(tmp_path, rounds):
    """rnnlab's store opening, four processes at once on a new store, round after round:
    every process opens every store, each store is created once and ends at the head."""
    for r in range(rounds):
        (tmp_path / f"store{r}").mkdir()
    command = [sys.executable, "-c", OPEN_ROUNDS, str(tmp_path), str(rounds)]
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    for r in range(rounds):
        release_together(tmp_path / f"release{r}", procs)
    for code, out, err in finish(procs):
        assert code == 0, err[-3000:]
        assert out.split("\n")[:-1] == [f"opened {r}" for r in range(rounds)]
    for r in range(rounds):
        assert at_head(tmp_path / f"store{r}" / "mlflow.db")
        assert not list((tmp_path / f"store{r}").glob("mlflow.db.bak-*"))


def test_half_migrated_store_met_by_train_and_runs_at_once(tmp_path):
    """The store the issue found (version row a8c4a736bde6, a leftover
    _alembic_tmp_latest_metrics, two runs: a killed upgrade's, as committed), met at once by ``rnnlab train`` and ``rnnlab
    runs``: one of them backs it up and finishes the migration, saying so in one line, the
    other waits for it; both succeed, the old runs are listed and kept, the new run finishes.
    (One train: each costs ~9 s of CPU; the slow tests race four.)"""
    from mlflow.tracking import MlflowClient

    folder = tmp_path / "store"
    folder.mkdir()
    broken = half_migrated_store(folder / "mlflow.db")

    results = race_trains(folder, 1, runs=["--experiment", store_break.EXPERIMENT])
    check_trained(folder, results, 1)
    (backup,) = folder.glob("mlflow.db.bak-*")
    (said,) = [err for _, _, err in results if "was half-migrated" in err]
    assert "(the schema migration of this store was interrupted: version row " in said
    assert f"finished the migration from {store_break.REVISION}" in said and str(backup) in said
    assert read_schema(backup) == broken  # the store as it was, runs and all
    listed = results[1][1]
    assert all(name in listed for name, _ in store_break.RUNS.values())
    old = runs_of(MlflowClient(f"sqlite:///{folder / 'mlflow.db'}"), store_break.EXPERIMENT)
    assert {r.info.run_id: (r.info.run_name, r.data.metrics["val/loss"]) for r in old} == (
        store_break.RUNS
    )


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["upgrade", "new"])
@pytest.mark.parametrize("after", [1, 5, 12, 20, 40, 80, 150, 300, 500, 800, 1100, 1400])
def test_migration_killed_anywhere_is_repaired(tmp_path, kind, after):
    """MLflow's upgrade of a store with runs (or its creation of a new store) SIGKILLed after
    its N-th SQL statement (of ~1,500): the next open brings the store to the head, with
    every run and metric."""
    from mlflow.tracking import MlflowClient

    from rnnlab.tracking.store import connect

    db = tmp_path / "mlflow.db"
    command = [sys.executable, store_break.__file__, str(db), str(after)]
    broke = subprocess.run([*command, *(["new"] if kind == "new" else [])], capture_output=True)
    assert broke.returncode == -9, broke.stderr.decode()[-2000:]
    connect(f"sqlite:///{db}", writes=True)
    assert at_head(db)
    if kind == "upgrade":
        client = MlflowClient(f"sqlite:///{db}")
        runs = runs_of(client, store_break.EXPERIMENT)
        assert {r.info.run_id: r.data.metrics["val/loss"] for r in runs} == {
            i: value for i, (_, value) in store_break.RUNS.items()
        }


def test_version_row_that_does_not_match_the_tables_is_redone(workdir, client):
    """A store whose tables are at the head but whose version row names MLflow's first
    revision (a migration that committed its tables, not its row): replaying from the row
    fails, so the revision the tables are at is found, stamped, and migrated from; the run
    is kept."""
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    experiment = client.create_experiment("kept")
    run = client.create_run(experiment).info.run_id
    client.log_metric(run, "val/loss", 0.125, step=7)
    first = list(ScriptDirectory.from_config(_get_alembic_config("")).walk_revisions())[-1]
    with sqlite3.connect(workdir / "mlflow.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (first.revision,))

    listed = cli_inprocess("runs", "--uri", client.tracking_uri, "-e", "kept", cwd=workdir)
    assert listed.returncode == 0, listed.stderr
    import re

    from rnnlab.tracking.migrate import ladder

    head = revisions()[1]
    assert f"version row {first.revision}" in listed.stderr
    # the first revision whose tables are the head's: MLflow 3.18's head migration changes no
    # table, column or index, so its tables are also those of the revision before it
    rungs = dict(ladder())
    same = [revision for revision, tables in rungs.items() if tables == rungs[head]]
    redone = re.search(r"its tables were at (\w+): redid the migration from there", listed.stderr)
    assert redone and redone.group(1) == same[0], (listed.stderr, same)
    assert f"from there to {head}" in listed.stderr
    assert run in listed.stdout
    assert at_head(workdir / "mlflow.db")
    assert client.get_metric_history(run, "val/loss")[0].value == 0.125


def test_store_that_cannot_be_repaired_names_backup_cause_and_fix(workdir, client):
    """Tables that are no revision's (a half-applied step rnnlab cannot finish) in a store
    with runs: exit 2, naming the backup and the cause; the store is as it was."""
    client.create_run(client.create_experiment("kept"))
    with sqlite3.connect(workdir / "mlflow.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (store_break.REVISION,))
        conn.execute("ALTER TABLE runs ADD COLUMN half_done INTEGER")
    before = checksum(workdir)

    refused = cli_inprocess("runs", "--uri", client.tracking_uri, cwd=workdir)
    assert refused.returncode == 2, refused.stderr
    (backup,) = workdir.glob("mlflow.db.bak-*")
    assert "the schema migration of this store was interrupted" in refused.stderr
    assert f"a copy of it is at {backup}" in refused.stderr
    assert "Start a new store" in refused.stderr and "Cannot reach" not in refused.stderr
    after = checksum(workdir)
    assert {k: after[k] for k in before} == before
    assert not list(workdir.glob("mlflow.db.migrating*"))


def test_store_from_a_newer_mlflow_is_refused_untouched(workdir, empty_store):
    """A store whose schema revision this MLflow does not know (a newer MLflow migrated it):
    train and runs refuse it with their own paragraph, exit 2, and not a byte changes."""
    uri = new_store(workdir, empty_store)
    with sqlite3.connect(workdir / "mlflow.db") as conn:  # what a later migration would do
        conn.execute("CREATE TABLE things_of_the_future (id INTEGER PRIMARY KEY)")
        conn.execute("UPDATE alembic_version SET version_num = 'f00dfacef00d'")
    before = checksum(workdir)
    for args in (["runs", "--uri", uri], [*TRAIN, f"tracking.uri={uri}"]):
        refused = cli_inprocess(*args, cwd=workdir)
        assert refused.returncode == 2, refused.stderr
        assert "was written by a newer MLflow" in refused.stderr
        assert "f00dfacef00d" in refused.stderr and "left untouched" in refused.stderr
        assert "Cannot reach" not in refused.stderr
    assert checksum(workdir) == before


def test_schema_lock_held_past_the_timeout(workdir):
    """While another process holds a new store's schema lock, a command waits, says so after
    a second, and past the timeout stops with its own paragraph; the store is not created."""
    db = workdir / "mlflow.db"
    fd = take_os_lock(workdir / "mlflow.db.lock")  # this process: "another process" to it
    try:
        waited = cli_inprocess(
            "runs",
            "--uri",
            f"sqlite:///{db}",
            cwd=workdir,
            env={"RNNLAB_STORE_LOCK_TIMEOUT_S": "1.1"},
        )
    finally:
        release_os_lock(fd)
    assert waited.returncode == 2, waited.stderr
    assert "rnnlab: waiting for process" in waited.stderr
    assert "is still being created or upgraded by process" in waited.stderr
    assert "RNNLAB_STORE_LOCK_TIMEOUT_S" in waited.stderr
    assert not db.exists()


def test_head_revision_is_mlflow_s_own():
    """The head revision read from MLflow's scripts as text is the one MLflow verifies."""
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config, _get_latest_schema_revision

    known, head = revisions()
    script = ScriptDirectory.from_config(_get_alembic_config(""))
    assert head == _get_latest_schema_revision()
    assert known == {s.revision for s in script.walk_revisions()}


def test_new_store_in_a_read_only_directory_says_so(mounted, workdir):  # noqa: F811
    """A store that must be created where nothing can be written: its own paragraph (the
    lock file cannot be made), not "cannot reach"."""
    readonly = mounted("ro", "ro,size=1m")
    result = cli_inprocess("runs", "--uri", f"sqlite:///{readonly / 'mlflow.db'}", cwd=workdir)
    assert result.returncode == 2, result.stderr
    assert "must be created or have its schema upgraded" in result.stderr
    assert "Read-only file system" in result.stderr and "Cannot reach" not in result.stderr


@pytest.mark.parametrize(
    ("fstype", "options", "shared"),
    [
        ("ext4", "rw,relatime", True),
        ("nfs4", "rw,vers=4.2,local_lock=none", True),
        ("nfs", "rw,vers=3,nolock", False),
        ("nfs4", "rw,vers=4.2,local_lock=flock", False),
        ("fuse.sshfs", "rw,nosuid", False),
        ("cifs", "rw,vers=3.0", False),
    ],
)
def test_where_the_schema_lock_is_not_shared_between_machines(tmp_path, fstype, options, shared):
    """The mount table says whether flock on the store's file system reaches other
    machines; where it may not, the reason is said (printed when the lock is taken)."""
    from rnnlab.tracking.schema_lock import unshared_lock_reason

    store = tmp_path / "share" / "runs"
    store.mkdir(parents=True)
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/sda1 / ext4 rw,relatime 0 0\n"
        f"server:/export {tmp_path / 'share'} {fstype} {options} 0 0\n"
    )
    reason = unshared_lock_reason(store / "mlflow.db", mounts)
    assert (reason is None) == shared
    if not shared:
        assert fstype in reason
