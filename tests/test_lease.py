"""One writer per run, and no run left RUNNING for ever: the lease, DEAD runs, --mark-dead,
--check, SIGTERM outside the training loop, and kills at each step of a checkpoint write.

Real processes only where the test is about one (two writers, signals, SIGKILL); the rest
runs in-process against a real sqlite store."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import RNNLAB, cli_inprocess, runs_of
from test_resume import metric_steps

from rnnlab.errors import TrackingError
from rnnlab.tracking.lease import HOST, LEASE_TAG, Holder, Lease, LeaseLost


def start(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    full.update(env or {})
    return subprocess.Popen(
        [*RNNLAB, *args],
        cwd=cwd,
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def foreign_lease(host: str, *, age_s: float, every_s: float = 30.0) -> str:
    holder = Holder(host, 4242, "f" * 32, time.time() - age_s, every_s)
    return holder.to_tag()


def bitcount(epochs: int) -> list[str]:
    """bitcount with a checkpoint every 10 epochs (the second one is at epoch 20), and
    no model: not what these tests are about, and its tracking process then never loads torch."""
    return [
        "experiment=bitcount_rmsprop",
        f"trainer.max_epochs={epochs}",
        "trainer.checkpoint_every_epochs=10",
        "device=cpu",
        "tracking.log_model=false",
    ]


#: the two-writer test's run (its winner is held at the lease until the loser has tried)
EPOCHS = 30
BITCOUNT = bitcount(EPOCHS)
SLOW = pytest.mark.slow
#: the fault-injection chain: each resumed process dies at its first checkpoint
CHAIN_EPOCHS = 60


def killed_run(workdir: Path, client, fault: str, args: list[str] = BITCOUNT) -> str:
    """A bitcount run SIGKILLed by ``RNNLAB_FAULT=fault``; its id."""
    proc = start(["train", *args], workdir, env={"RNNLAB_FAULT": fault})
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, err
    (run,) = runs_of(client, "bitcount")
    return run.info.run_id


def test_two_resumers_exactly_one_writes(workdir, client):
    run_id = killed_run(workdir, client, "checkpoint.renamed@2")
    # whichever takes the lease first waits there until the other has asked and been refused
    release = workdir / "release"
    hold = {"RNNLAB_HOLD": f"lease.acquired:{release}"}
    both = [start(["train", f"resume={run_id}", "device=cpu"], workdir, hold) for _ in range(2)]
    deadline = time.monotonic() + 900  # a safety net for a stuck process, not a race
    while time.monotonic() < deadline:
        exited = [p for p in both if p.poll() is not None]
        reached = list(workdir.glob("release.*.reached"))
        if exited and reached:
            break
        time.sleep(0.02)
    assert len(exited) == 1 and len(reached) == 1  # the loser has left; the winner is held
    release.touch()
    results = [(p, *p.communicate(timeout=600)) for p in both]
    assert sorted(p.returncode for p, _, _ in results) == [0, 2], results
    (winner,) = [r for r in results if r[0].returncode == 0]
    (loser,) = [r for r in results if r[0].returncode == 2]
    assert "resuming run" in winner[1]
    # the holder's name as its lock file gives it: "PID HOST", not the disk reserve after it
    assert f"being written by process {winner[0].pid} on {HOST};" in loser[2], loser[2][:400]
    assert f"rnnlab train resume={run_id} force=true" in loser[2]
    assert "Traceback" not in loser[2]
    done = client.get_run(run_id)
    assert done.info.status == "FINISHED"
    assert LEASE_TAG not in done.data.tags  # released at the end
    assert metric_steps(client, run_id, "train/loss") == list(range(1, EPOCHS + 1))
    assert len(metric_steps(client, run_id, "test/loss")) == 1  # evaluated once, not twice


def test_live_foreign_lease_refuses_and_force_takes_over(workdir, client):
    exp = client.create_experiment("bitcount")
    run = client.create_run(exp, tags={LEASE_TAG: foreign_lease("elsewhere", age_s=5)})
    run_id = run.info.run_id
    refused = cli_inprocess("train", f"resume={run_id}", "device=cpu", cwd=workdir)
    assert refused.returncode == 2
    assert "being written by process 4242 on elsewhere" in refused.stderr
    assert client.get_run(run_id).info.status == "RUNNING"  # untouched
    assert Holder.parse(client.get_run(run_id).data.tags[LEASE_TAG]).host == "elsewhere"
    # force=true takes it; the run never reached a checkpoint, which resume now says
    forced = cli_inprocess("train", f"resume={run_id}", "force=true", "device=cpu", cwd=workdir)
    assert forced.returncode == 2
    assert "stopped before its first checkpoint" in forced.stderr
    assert "without resume=" in forced.stderr
    after = client.get_run(run_id)
    assert after.info.status == "FAILED"
    assert "first checkpoint" in after.data.tags["failure_reason"]
    assert LEASE_TAG not in after.data.tags


def test_stale_foreign_lease_is_taken_over(workdir, client):
    exp = client.create_experiment("bitcount")
    stale = foreign_lease("elsewhere", age_s=3600)
    run = client.create_run(exp, tags={LEASE_TAG: stale})
    result = cli_inprocess("train", f"resume={run.info.run_id}", "device=cpu", cwd=workdir)
    assert result.returncode == 2
    assert "stopped before its first checkpoint" in result.stderr  # it got past the lease


def test_force_without_resume_is_refused_before_any_run(workdir, client):
    result = cli_inprocess("train", "force=true", "device=cpu", cwd=workdir)
    assert result.returncode == 2
    assert "force=true only applies to resume=RUN_ID" in result.stderr
    assert client.get_experiment_by_name("bitcount") is None


def test_a_holder_whose_lease_is_taken_stops_writing(workdir, client, store_uri):
    exp = client.create_experiment("x")
    run = client.create_run(exp)
    lease = Lease.acquire(client, uri=store_uri, run=run, heartbeat_s=0.05, force=False)
    try:
        lease.check()
        client.set_tag(run.info.run_id, LEASE_TAG, foreign_lease("elsewhere", age_s=0))
        deadline = time.monotonic() + 10
        while lease.lost is None and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(LeaseLost, match="taken over by process 4242 on elsewhere"):
            lease.check()
    finally:
        lease.release()
    # not ours any more: release leaves the new holder's tag alone
    assert Holder.parse(client.get_run(run.info.run_id).data.tags[LEASE_TAG]).pid == 4242


def test_dead_runs_are_shown_checked_and_marked_failed(workdir, client):
    exp = client.create_experiment("bitcount")
    # a run whose writer on this machine died: its lease names this host, the OS lock is free
    dead_tag = foreign_lease(socket.gethostname(), age_s=1)
    dead = client.create_run(exp, tags={LEASE_TAG: dead_tag})
    table = cli_inprocess("runs", "--format", "json", cwd=workdir)
    assert table.returncode == 0, table.stderr
    (row,) = json.loads(table.stdout)
    assert row["status"] == "DEAD"
    check = cli_inprocess("runs", "--check", cwd=workdir)
    assert check.returncode == 1
    assert "DEAD: RUNNING, but its writer process 4242" in check.stdout
    assert "no checkpoints/last.pt" in check.stdout
    marked = cli_inprocess("runs", "--mark-dead", cwd=workdir)
    assert marked.returncode == 0, marked.stderr
    assert "marked 1 dead run(s) FAILED" in marked.stdout
    after = client.get_run(dead.info.run_id)
    assert after.info.status == "FAILED"
    assert "writer died without ending it" in after.data.tags["failure_reason"]
    again = cli_inprocess("runs", "--check", cwd=workdir)
    assert again.returncode == 0, again.stdout
    assert "0 problem(s)" in again.stdout


def test_sigterm_during_final_evaluation_ends_killed_and_resumes(workdir, client):
    proc = start(
        ["train", "trainer.max_epochs=3", "device=cpu"],
        workdir,
        env={"RNNLAB_FAULT": "final_evaluation@1:sigterm"},
    )
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err
    assert "during the final evaluation" in err and "marked KILLED" in err
    assert "Traceback" not in err
    (run,) = runs_of(client, "bitcount")
    assert run.info.status == "KILLED"
    resumed = cli_inprocess("train", f"resume={run.info.run_id}", "device=cpu", cwd=workdir)
    assert resumed.returncode == 0, resumed.stderr
    done = client.get_run(run.info.run_id)
    assert done.info.status == "FINISHED"
    assert "test/loss" in done.data.metrics
    assert "failure_reason" not in done.data.tags  # the KILLED episode went to history
    assert "stopped by signal 15" in done.data.tags["failure_history"]


def metric_histories(client, run_id: str) -> dict[str, list[tuple[int, float]]]:
    run = client.get_run(run_id)
    return {
        key: [(m.step, m.value) for m in client.get_metric_history(run_id, key)]
        for key in sorted(run.data.metrics)
    }


@pytest.mark.parametrize(
    "points",
    [
        ("checkpoint.temp",),
        pytest.param(("checkpoint.flush", "checkpoint.temp", "checkpoint.rename"), marks=SLOW),
    ],
    ids=["one resumed kill", "every step"],
)
def test_kill_at_each_step_of_a_checkpoint_write_then_resume_is_bit_exact(workdir, client, points):
    """SIGKILL after the rename (a fresh run), then, resumed each time, at ``points``: before
    the metrics flush, with the temp file just created, before the rename. The run that
    finally resumes to the end holds exactly the metrics of an uninterrupted run. ``make
    test`` kills one resumed run (with the temp file half made: the step a kill most often
    leaves); ``make test-all`` kills at every step (each kill is a process, ~5 s)."""
    chain = bitcount(CHAIN_EPOCHS)
    run_id = killed_run(workdir, client, "checkpoint.renamed@1", chain)
    for point in points:
        proc = start(
            ["train", f"resume={run_id}", "device=cpu"], workdir, env={"RNNLAB_FAULT": point}
        )
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == -signal.SIGKILL, err
        assert "resuming run" in out
    final = cli_inprocess("train", f"resume={run_id}", "device=cpu", cwd=workdir)
    assert final.returncode == 0, final.stderr
    reference = cli_inprocess("train", *chain, cwd=workdir)
    assert reference.returncode == 0, reference.stderr
    (ref_id,) = [r.info.run_id for r in runs_of(client, "bitcount") if r.info.run_id != run_id]
    resumed, uninterrupted = metric_histories(client, run_id), metric_histories(client, ref_id)
    assert resumed.keys() == uninterrupted.keys()
    for key in resumed:  # every point at its step, bit for bit; none missing, none twice
        assert resumed[key] == uninterrupted[key], key
    assert [s for s, _ in resumed["train/loss"]] == list(range(1, CHAIN_EPOCHS + 1))
    checkpoints = next(workdir.glob(f"mlartifacts/*/{run_id}/artifacts/checkpoints"))
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.pt", "last.pt"]
    check = cli_inprocess("runs", "--check", cwd=workdir)
    print(check.stdout)  # the issue note quotes it
    assert check.returncode == 0, check.stdout
    assert "checked 2 run(s)" in check.stdout and "0 problem(s)" in check.stdout


def test_resume_of_a_run_a_sweep_job_is_writing_is_refused(workdir, client, store_uri):
    """A sweep job's run holds its lease from the moment it is created (RunLogger, as
    session.run_job makes it for each job), so resuming it meanwhile is refused."""
    from rnnlab.tracking.logger import RunLogger

    job = RunLogger(
        uri=store_uri,
        experiment="bitcount",
        run_name="job-0",
        tags={"sweep": "PARENT", "sweep_job": "0"},
        heartbeat_s=30.0,
    )
    try:
        result = cli_inprocess("train", f"resume={job.run_id}", "device=cpu", cwd=workdir)
        assert result.returncode == 2
        assert f"being written by process {os.getpid()} on" in result.stderr
        assert client.get_run(job.run_id).info.status == "RUNNING"
    finally:
        job.end("FINISHED")
    assert LEASE_TAG not in client.get_run(job.run_id).data.tags


def test_a_resume_waits_for_the_tracking_process_of_a_dead_run_to_leave(workdir, client, store_uri):
    """The training process died; its tracking process still holds the OS lock for a moment
    (storing the last metrics it was sent). A resume waits for it instead of refusing."""
    from rnnlab.tracking.lease import lock_path

    exp = client.create_experiment("x")
    run = client.create_run(exp)
    path = lock_path(store_uri, run.info.run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs: the training process the lock file names
    tracker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, socket, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.write(fd, f'{sys.argv[2]} {socket.gethostname()}'.encode())\n"
            "print('locked', flush=True)\n"
            "time.sleep(2)\n",
            str(path),
            str(dead.pid),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert tracker.stdout.readline() == "locked\n"
    lease = Lease.acquire(client, uri=store_uri, run=run, heartbeat_s=30.0, force=False)
    try:
        assert tracker.poll() is not None  # taken once the tracker had left, not before
        assert Holder.parse(client.get_run(run.info.run_id).data.tags[LEASE_TAG]).pid == os.getpid()
    finally:
        lease.release()
        tracker.wait()


def test_a_lock_held_by_a_live_training_process_is_still_refused(workdir, client, store_uri):
    from rnnlab.tracking.lease import lock_path

    exp = client.create_experiment("x")
    run = client.create_run(exp)
    path = lock_path(store_uri, run.info.run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, socket, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.write(fd, f'{os.getpid()} {socket.gethostname()}'.encode())\n"
            "print('locked', flush=True)\n"
            "time.sleep(60)\n",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(TrackingError, match=f"being written by process {holder.pid} on"):
            Lease.acquire(client, uri=store_uri, run=run, heartbeat_s=30.0, force=False)
        assert holder.poll() is None  # the holder lives on: its lock was not waited out
    finally:
        holder.kill()
        holder.wait()


def test_the_one_locked_out_is_told_who_holds_the_lock_not_the_disk_reserve(tmp_path):
    """A lease's lock file holds "PID HOST" and then the zero-filled disk reserve; the name
    read back is the first part alone (the reserve once made the refusal 256 kB of NULs)."""
    from rnnlab.tracking.lease import RESERVE_BYTES, lock_owner, release_os_lock, take_os_lock

    path = tmp_path / "run.lock"
    fd = take_os_lock(path, reserve=True)
    try:
        assert path.stat().st_size == RESERVE_BYTES
        assert take_os_lock(path) is None  # a second descriptor is locked out, even here
        assert lock_owner(path) == f"process {os.getpid()} on {HOST}"
    finally:
        release_os_lock(fd)
