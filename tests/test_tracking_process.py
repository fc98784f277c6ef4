"""The tracking process (rnnlab.session.sidecar): a ``rnnlab train`` process writes its run
through a second process and never imports MLflow itself, and the run is the same run, on
every way it can end: finished, stopped by a signal, its training process killed, its
tracking process killed.

Real processes only: the tracking process is what a ``rnnlab`` process starts (an in-process
call of the command line writes MLflow in process, as ``RNNLAB_TRACKING_PROCESS=0`` does)."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import mlflow.pyfunc
import mlflow.pytorch
import pandas as pd
import psutil
import pytest
import torch
from conftest import cli_inprocess, runs_of
from test_lease import bitcount, start

from rnnlab.tracking.lease import LEASE_TAG, Holder

#: runs `rnnlab train ARGS` as the executable does, then says on stderr whether MLflow was
#: ever imported in this process
PROBE = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('mlflow imported:', 'mlflow' in sys.modules, "
    "file=sys.stderr))\n"
    "from rnnlab.cli import main\n"
    "sys.argv = ['rnnlab', *sys.argv[1:]]\n"
    "main()\n"
)
LONG = ["experiment=bitcount_rmsprop", "trainer.max_epochs=1000000", "device=cpu"]


@contextlib.contextmanager
def mlflow_uri(uri: str):
    """MLflow's global tracking URI (which ``load_model`` reads) set to ``uri``, then back."""
    from mlflow.tracking._tracking_service import utils

    saved = utils._tracking_uri
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        utils._tracking_uri = saved


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(extra)
    return env


def probe(args: list[str], cwd: Path, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=cwd,
        env=environment(**extra),
        capture_output=True,
        text=True,
        timeout=300,
    )


def running_run(client, proc: subprocess.Popen, timeout_s: float = 120.0):
    """The run ``proc`` writes, once it has trained a few epochs."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        exp = client.get_experiment_by_name("bitcount")
        runs = client.search_runs([exp.experiment_id]) if exp else []
        if runs and client.get_metric_history(runs[0].info.run_id, "train/loss"):
            return runs[0]
        time.sleep(0.2)
    raise AssertionError("the run never logged train/loss")


def tracker_of(proc: subprocess.Popen) -> psutil.Process:
    (child,) = [
        c for c in psutil.Process(proc.pid).children() if "rnnlab.session.tracker" in c.cmdline()
    ]
    return child


def test_a_run_through_the_tracking_process_is_complete_and_mlflow_stays_out(
    workdir, client, store_uri
):
    done = probe(["train", "trainer.max_epochs=50", "device=cpu"], workdir)
    assert done.returncode == 0, done.stderr
    assert "mlflow imported: False" in done.stderr  # the training process never loaded it
    (run,) = runs_of(client, "bitcount")
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"
    assert LEASE_TAG not in run.data.tags  # released at the end
    assert run.data.params["optim.name"] == "rmsprop"
    assert run.data.tags["threads"] and run.data.tags["precision"]  # set from training
    assert run.data.tags["mlflow.source.name"] == "rnnlab train"
    steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
    assert steps == list(range(1, 51))  # every epoch's point, in order, once
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "plots", "checkpoints"} <= artifacts
    assert [a.path for a in client.list_artifacts(run_id, "plots")] == ["plots/loss_curve.png"]
    inputs = client.get_run(run_id).inputs.dataset_inputs
    assert {i.tags[0].value for i in inputs} >= {"train", "test"}  # one per split
    assert all(i.dataset.name.startswith("bitcount") for i in inputs)
    uri = client.get_run(run_id).data.tags["model_uri"]
    with mlflow_uri(store_uri):
        model = mlflow.pytorch.load_model(uri)
        served = mlflow.pyfunc.load_model(uri)  # the text-in flavour, logged over there too
    assert isinstance(model, torch.nn.Module)
    counted = served.predict(pd.DataFrame({"bits": ["0110"]}))["count"][0]
    assert counted == pytest.approx(
        model(torch.tensor([[[0.0]], [[1.0]], [[1.0]], [[0.0]]])).item()
    )
    assert f"model: {uri}" in done.stdout

    # the control for the probe: a command that reads the store imports MLflow, and the
    # probe says so (a second training process would cost ~8 s of CPU for the same proof)
    listed = probe(["runs", "--uri", store_uri], workdir)
    assert listed.returncode == 0, listed.stderr
    assert run_id[:8] in listed.stdout
    assert "mlflow imported: True" in listed.stderr


def test_the_escape_hatch_writes_mlflow_from_the_training_process(monkeypatch):
    """``RNNLAB_TRACKING_PROCESS=0``: no tracking process even where the executable would
    start one (what cli_inprocess runs: the command line called in process never does)."""
    from rnnlab.session import sidecar

    monkeypatch.setattr(sidecar, "_allowed", True)  # as the rnnlab executable sets it
    monkeypatch.setenv(sidecar.ENV_VAR, "0")
    assert not sidecar.wanted()
    monkeypatch.setenv(sidecar.ENV_VAR, "1")
    assert sidecar.wanted() == (os.name == "posix")


@pytest.mark.slow  # make test: tests/test_resume.py's Ctrl-C checks the lease's pid and KILLED
def test_the_lease_names_the_training_process_and_sigterm_ends_the_run_killed(workdir, client):
    proc = start(["train", *LONG], workdir)
    run = running_run(client, proc)
    holder = Holder.parse(client.get_run(run.info.run_id).data.tags[LEASE_TAG])
    assert holder.pid == proc.pid  # the process a user would stop, not its tracker
    tracker = tracker_of(proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "a checkpoint was saved" in err
    assert "Traceback" not in err
    ended = client.get_run(run.info.run_id)
    assert ended.info.status == "KILLED"
    assert "stopped by signal" in ended.data.tags["failure_reason"]
    assert LEASE_TAG not in ended.data.tags
    tracker.wait(timeout=10)  # gone with the run


def trackers_in(folder: Path) -> list[psutil.Process]:
    """The tracking processes working in ``folder`` (a dead run's may have been reparented)."""
    return [
        process
        for process in psutil.process_iter(["cmdline", "cwd"])
        if "rnnlab.session.tracker" in (process.info["cmdline"] or [])
        and process.info["cwd"] == str(folder)
    ]


def test_a_killed_training_process_takes_its_tracker_along_and_the_run_resumes(workdir, client):
    # killed by its own fault point right after its first checkpoint (epoch 10 of 60)
    proc = start(["train", *bitcount(60)], workdir, env={"RNNLAB_FAULT": "checkpoint.renamed@1"})
    assert proc.wait(timeout=120) == -signal.SIGKILL
    (run,) = runs_of(client, "bitcount")
    assert run.info.status == "RUNNING"  # as after any crash: resumable
    # at once: the tracker may still be storing what it was sent; the resume waits for it
    # (in this process: a resume writes MLflow in process, here as in its own process)
    resumed = cli_inprocess("train", f"resume={run.info.run_id}", "device=cpu", cwd=workdir)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming run" in resumed.stdout
    assert trackers_in(workdir) == []  # its pipe closed: it left, with the run's OS lock
    proc.communicate(timeout=60)
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert steps == list(range(1, 61))  # none lost, none twice


def test_a_killed_tracking_process_fails_the_run_from_the_training_process(workdir, client):
    """(With ``tracking.log_model=false``, whose tracking process never loads torch: it
    writes the run all the same, epochs on.)"""
    proc = start(["train", *LONG, "tracking.log_model=false"], workdir)
    run = running_run(client, proc)
    tracker = tracker_of(proc)
    assert not [m.path for m in tracker.memory_maps() if "libtorch" in m.path]
    tracker.kill()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert f"tracking process (pid {tracker.pid})" in err
    assert "was killed by signal 9" in err
    assert "RNNLAB_TRACKING_PROCESS=0" in err
    assert "Traceback" not in err
    ended = client.get_run(run.info.run_id)
    assert ended.info.status == "FAILED"  # recorded from the training process
    assert "TrackingProcessGone" in ended.data.tags["failure_reason"]
    assert LEASE_TAG not in ended.data.tags
    points = client.get_metric_history(run.info.run_id, "train/loss")
    assert points  # what it wrote before is kept


def test_a_store_the_tracking_process_cannot_open_is_one_paragraph_and_no_run(workdir):
    db = workdir / "shop.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    done = probe(["train", f"tracking.uri=sqlite:///{db}", "trainer.max_epochs=5"], workdir)
    assert done.returncode == 2, done.stderr
    assert "another application's database" in done.stderr  # raised there, reported here
    assert "Traceback" not in done.stderr
    assert "mlflow imported: False" in done.stderr
    with contextlib.closing(sqlite3.connect(db)) as conn:
        tables = conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
    assert tables == [("customers",)]


#: a long run's writes sent without waiting (points every few seconds, hours without a
#: checkpoint), as the RemoteLogger sends them; the tracker stores them at its own pace
MANY_WRITES = """
import sys, time
from rnnlab.session.sidecar import TrackingProcess
process = TrackingProcess.start()
run = process.open_run(
    uri=sys.argv[1], experiment="many", run_name="r", flush_every_s=600.0, heartbeat_s=30.0
)
for step in range(1, 5001):
    process.send("log_points", [({"loss": 1.0 / step}, step, int(time.time() * 1000))])
run.set_tags({"steps": "5000"})
run.end("FINISHED")
print("ended")
"""


def test_thousands_of_writes_sent_without_waiting_do_not_stall_the_pipes(workdir, client):
    """5,000 requests whose answers nobody waits for: more than a pipe holds, both ways."""
    done = subprocess.run(
        [sys.executable, "-c", MANY_WRITES, f"sqlite:///{workdir / 'mlflow.db'}"],
        cwd=workdir,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=240,  # a stalled pipe never ends: fail rather than hang
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ended"
    (run,) = runs_of(client, "many")
    assert run.info.status == "FINISHED"
    assert run.data.tags["steps"] == "5000"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
    assert steps == list(range(1, 5001))
