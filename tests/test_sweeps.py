"""Hydra multirun with real launchers and sweepers, tracked in a real sqlite store: joblib
(parallel processes), submitit_local (the SLURM code path), Optuna; every sweep a parent run
with one child per job.

The joblib and submitit sweeps run ``rnnlab`` as a real process (their launchers start worker
processes anyway), and so does the aborted sweep (its parent run is closed by an atexit
handler, at process exit); the Optuna sweeps (the basic launcher, jobs in-process) and the
config checks run in-process."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import cli_inprocess, run_cli, runs_of

TINY = ["trainer.max_epochs=5", "device=cpu"]


def sweep_runs(client, experiment: str = "bitcount"):
    """(parent, children) of the only sweep in ``experiment``."""
    runs = runs_of(client, experiment)
    parents = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(runs) - 1, "every non-parent run is a child of the sweep"
    return parent, children


def sweep_dir(workdir: Path) -> Path:
    (found,) = (workdir / "multirun").glob("*/*")
    return found


def assert_ok(done) -> None:
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-5000:]}"


@pytest.mark.slow  # make test-all; the server test runs an 8-job joblib sweep too
def test_joblib_sweep_of_eight_jobs_on_four_workers_loses_nothing(workdir, client, store_uri):
    """A joblib sweep: four worker processes write into one sqlite file at once (flush_every_s=0
    makes every epoch a separate write, the worst case for lock contention); every job is a
    FINISHED child of the sweep's parent run, tagged with its overrides, with its full history."""
    epochs = 15
    done = run_cli(
        "train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4",
        "seed=1,2,3,4,5,6,7,8", f"trainer.max_epochs={epochs}", "tracking.flush_every_s=0",
        "device=cpu", cwd=workdir, timeout=600,
    )  # fmt: skip
    assert_ok(done)
    assert "Joblib.Parallel(n_jobs=4" in done.stdout + done.stderr
    parent, children = sweep_runs(client)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["jobs_finished"] == "8"
    assert len(children) == 8
    assert sorted(int(c.data.params["seed"]) for c in children) == list(range(1, 9))
    for child in children:
        assert child.info.status == "FINISHED", child.data.tags.get("failure_reason")
        assert child.data.tags["sweep"] == parent.info.run_id
        seed = child.data.params["seed"]
        assert child.data.tags["overrides"] == (
            f"seed={seed} trainer.max_epochs={epochs} tracking.flush_every_s=0 device=cpu"
        )
        for key in ("train/loss", "val/loss", "lr", "elman/w_x", "elman/w_rec"):
            history = client.get_metric_history(child.info.run_id, key)
            assert sorted(m.step for m in history) == list(range(1, epochs + 1)), key
        assert {"test/loss", "test_long/loss"} <= set(child.data.metrics)
        # the thread policy: 4 jobs at once share the cores (joblib's OMP_NUM_THREADS agrees)
        assert child.data.tags["threads"] == str(max(1, (os.cpu_count() or 1) // 4))
        assert "4 sweep jobs at once" in child.data.tags["threads_reason"]
        assert {a.path for a in client.list_artifacts(child.info.run_id)} >= {
            "config.yaml",
            "checkpoints",
            "plots",
        }
    db = store_uri.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.slow  # make test-all: a real submitit_local sweep (SLURM's code path)
def test_submitit_local_runs_a_two_job_sweep(workdir, client):
    done = run_cli(
        "train", "-m", "hydra/launcher=submitit_local", "seed=1,2", *TINY, cwd=workdir,
    )  # fmt: skip
    assert_ok(done)
    parent, children = sweep_runs(client)
    assert parent.info.status == "FINISHED"
    assert sorted(c.data.params["seed"] for c in children) == ["1", "2"]
    for child in children:
        assert child.info.status == "FINISHED"
        assert len(client.get_metric_history(child.info.run_id, "train/loss")) == 5
    logs = list((sweep_dir(workdir) / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2, "submitit ran each job as its own process with its own log"
    assert all("Job completed successfully" in p.read_text() for p in logs)


def test_slurm_config_needs_only_partition_and_time(workdir):
    done = cli_inprocess(
        "train", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
        "hydra.launcher.timeout_min=30", "--cfg", "hydra", cwd=workdir,
    )  # fmt: skip
    assert_ok(done)
    launcher = yaml.safe_load(done.stdout)["hydra"]["launcher"]
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert launcher["partition"] == "gpu"
    assert launcher["timeout_min"] == 30
    assert launcher["gpus_per_node"] == 1


def test_optuna_minimises_the_objective_and_survives_a_diverged_trial(workdir, client):
    """SGD at lr 10 diverges: that trial is a FAILED run with objective +inf, and the study
    goes on; the best value Optuna reports is the best val/loss any child logged."""
    done = cli_inprocess(
        "train", "-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=4",
        "hydra.sweeper.sampler.seed=7", "optim=sgd", "optim.lr=choice(1e-5,10.0)", *TINY,
        cwd=workdir,
    )  # fmt: skip
    assert_ok(done)
    parent, children = sweep_runs(client)
    assert len(children) == 4
    statuses = {c.info.run_id: c.info.status for c in children}
    diverged = [c for c in children if c.data.params["optim.lr"] == "10.0"]
    assert diverged, "the seeded sampler picked lr=10 at least once (else this test is vacuous)"
    for child in diverged:
        assert statuses[child.info.run_id] == "FAILED"
        assert "diverged" in child.data.tags["failure_reason"]
    finished = [c for c in children if statuses[c.info.run_id] == "FINISHED"]
    assert finished, "lr=1e-5 trials finish"
    assert parent.data.tags.get("jobs_failed") == str(len(diverged))
    best_logged = min(
        m.value for c in finished for m in client.get_metric_history(c.info.run_id, "val/loss")
    )
    results = yaml.safe_load((sweep_dir(workdir) / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(best_logged, rel=1e-9)
    assert results["best_params"]["optim.lr"] == pytest.approx(1e-5)
    assert "Training diverged" in done.stderr


def test_optuna_preset_composes(workdir):
    done = cli_inprocess("train", "experiment=bitcount_optuna", "--cfg", "hydra", cwd=workdir)
    assert_ok(done)
    sweeper = yaml.safe_load(done.stdout)["hydra"]["sweeper"]
    assert sweeper["_target_"].endswith("optuna_sweeper.OptunaSweeper")
    assert sweeper["direction"] == "minimize"
    assert sweeper["storage"] is None
    assert set(sweeper["params"]) == {"optim", "optim.lr"}


def test_a_sweep_that_aborts_still_closes_its_parent(workdir, client):
    """trainer.max_epochs=-1 is a config error: Hydra stops the sweep, and the parent run is
    closed as FAILED (not left RUNNING) with the job counts."""
    done = run_cli("train", "-m", "trainer.max_epochs=2,-1", "device=cpu", cwd=workdir)
    assert done.returncode != 0
    assert "trainer.max_epochs must be a positive integer" in done.stderr
    parent, children = sweep_runs(client)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["sweep_aborted"] == "true"
    assert [c.info.status for c in children] == ["FINISHED"]


@pytest.mark.slow
def test_a_store_locked_past_the_busy_timeout_is_a_clear_error(workdir, store_uri):
    """Another process holds the sqlite write lock longer than MLflow's 20 s busy timeout."""
    from rnnlab.errors import TrackingError
    from rnnlab.tracking.logger import RunLogger
    from rnnlab.tracking.store import SQLITE_BUSY_TIMEOUT_S

    logger = RunLogger(uri=store_uri, experiment="locked", run_name="r", flush_every_s=3600)
    logger.log_metrics({"a": 1.0}, step=1)
    release = threading.Event()

    def hold_lock() -> None:
        conn = sqlite3.connect(store_uri.removeprefix("sqlite:///"), timeout=60)
        conn.isolation_level = None
        conn.execute("BEGIN IMMEDIATE")
        release.wait(SQLITE_BUSY_TIMEOUT_S + 30)
        conn.execute("ROLLBACK")
        conn.close()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    time.sleep(1)
    try:
        with pytest.raises(TrackingError, match="mlflow server"):
            logger.flush()
    finally:
        release.set()
        holder.join()
