"""Groups a Hydra multirun in MLflow: a parent run per sweep, every job a child of it.

The Hydra callback opens the parent run in ``on_multirun_start`` and leaves its id in the
sweep directory, where every job reads it (this works for in-process, joblib, submitit and
SLURM launchers alike, since all share the sweep directory). Jobs start their child run with
``mlflow.parentRunId``; the ``MLFLOW_RUN_ID`` variable is deliberately not used (it would
override the parent, mlflow issue 15713).
"""

from __future__ import annotations

import atexit
import functools
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from rnnlab.errors import debug_enabled, report, user_error

PARENT_FILE = ".mlflow_parent_run_id"


def read_parent_run_id(sweep_dir: str | Path) -> str | None:
    path = Path(sweep_dir) / PARENT_FILE
    return path.read_text().strip() if path.is_file() else None


class MlflowSweepCallback(Callback):
    """Opens and closes the parent MLflow run of a multirun."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Open the parent run; a store that refuses it (down, a wrong password) stops the
        sweep with the one message and its exit code: Hydra turns a callback's exception
        into a warning and launches every job anyway, each failing the same way."""
        try:
            self._open_parent(config)
        except Exception as exc:
            error = user_error(exc)
            if error is None or debug_enabled():
                raise
            report(error)
            sys.exit(error.exit_code)

    def _open_parent(self, config: DictConfig) -> None:
        from rnnlab.tracking.store import connect, experiment_id
        from rnnlab.tracking.uri import resolve_tracking_uri

        uri = resolve_tracking_uri(config.tracking.uri)
        client = connect(uri)
        name = str(config.tracking.experiment or config.task.name)
        exp = experiment_id(client, name, uri=uri)
        overrides = " ".join(config.hydra.overrides.task)
        run = client.create_run(
            exp,
            run_name=f"sweep-{time.strftime('%Y%m%d-%H%M%S')}",
            tags={"overrides": overrides, "sweep_role": "parent"},
        )
        client.set_tag(run.info.run_id, "sweep", run.info.run_id)
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / PARENT_FILE).write_text(run.info.run_id)
        # Hydra skips on_multirun_end when the sweep raises (a failed job under the basic or
        # joblib launcher, too many failed Optuna trials): close the parent at exit instead.
        self._abort = functools.partial(close_parent, uri, run.info.run_id, aborted=True)
        atexit.register(self._abort)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if getattr(self, "_abort", None) is not None:
            atexit.unregister(self._abort)
            self._abort = None
        parent = read_parent_run_id(config.hydra.sweep.dir)
        if parent is None:
            return
        from rnnlab.tracking.uri import resolve_tracking_uri

        close_parent(resolve_tracking_uri(config.tracking.uri), parent)


def close_parent(uri: str, parent: str, *, aborted: bool = False) -> None:
    """End the parent run: FINISHED when every child finished, else FAILED; tag the counts."""
    from rnnlab.tracking.store import connect

    client = connect(uri)
    if client.get_run(parent).info.status != "RUNNING":
        return
    children = client.search_runs(
        [client.get_run(parent).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent}'",
        max_results=50000,
    )
    statuses = Counter(r.info.status for r in children)
    tags = {f"jobs_{status.lower()}": str(count) for status, count in statuses.items()}
    if aborted:
        tags["sweep_aborted"] = "true"
    for key, value in tags.items():
        client.set_tag(parent, key, value)
    ok = not aborted and set(statuses) <= {"FINISHED"}
    client.set_terminated(parent, status="FINISHED" if ok else "FAILED")
    failed = sorted(r.info.run_name for r in children if r.info.status != "FINISHED")
    if failed and not aborted:
        print(
            f"rnnlab: warning: {len(failed)} of {len(children)} sweep jobs failed "
            f"({', '.join(failed)}); each has a failure_reason tag in MLflow (parent run {parent})",
            file=sys.stderr,
            flush=True,
        )
