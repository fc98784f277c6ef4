"""Groups a Hydra multirun in MLflow: a parent run per sweep, every job a child of it.

The Hydra callback opens the parent run in ``on_multirun_start`` and leaves its id in the
sweep directory, where every job reads it (this works for in-process, joblib, submitit and
SLURM launchers alike, since all share the sweep directory). Jobs start their child run with
``mlflow.parentRunId``; the ``MLFLOW_RUN_ID`` variable is deliberately not used (it would
override the parent, mlflow issue 15713).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

PARENT_FILE = ".mlflow_parent_run_id"


def read_parent_run_id(sweep_dir: str | Path) -> str | None:
    path = Path(sweep_dir) / PARENT_FILE
    return path.read_text().strip() if path.is_file() else None


class MlflowSweepCallback(Callback):
    """Opens and closes the parent MLflow run of a multirun."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
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

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        parent = read_parent_run_id(config.hydra.sweep.dir)
        if parent is None:
            return
        from rnnlab.tracking.store import connect
        from rnnlab.tracking.uri import resolve_tracking_uri

        client = connect(resolve_tracking_uri(config.tracking.uri))
        failed = [
            r
            for r in client.search_runs(
                [client.get_run(parent).info.experiment_id],
                filter_string=f"tags.mlflow.parentRunId = '{parent}'",
            )
            if r.info.status != "FINISHED"
        ]
        client.set_terminated(parent, status="FAILED" if failed else "FINISHED")
        if failed:
            names = ", ".join(sorted(r.info.run_name for r in failed))
            print(
                f"rnnlab: error: {len(failed)} job(s) of the sweep failed ({names}). Each failed "
                f"run has a failure_reason tag in MLflow (parent run {parent}); fix the "
                "configuration and re-run those jobs.",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(1)
