"""A thin MLflow run writer with batched metric logging.

Metrics are buffered in memory and written with ``log_batch`` (1000 per call) every
``flush_every_s`` seconds, before every checkpoint, at the end, and before a failure is
recorded. So a 2000-epoch run spends its time training rather than writing to the store, and
a checkpoint never runs ahead of the metrics it implies.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rnnlab.errors import TrackingError
from rnnlab.tracking.uri import sqlite_path

MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_LENGTH = 6000

log = logging.getLogger(__name__)

#: MLflow waits this long for a sqlite write lock (its ``PRAGMA busy_timeout``) before failing
SQLITE_BUSY_TIMEOUT_S = 20


def use_wal(db: Path) -> None:
    """Switch a sqlite store to write-ahead logging (persistent, idempotent).

    With WAL, readers never block the writer and writers queue on one lock instead of
    upgrading read locks, so parallel sweep jobs (joblib, submitit_local) write side by side.
    Best effort: if another process holds the database at this instant the mode stays as it
    is, and MLflow's busy timeout still serialises writers.
    """
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(db, timeout=SQLITE_BUSY_TIMEOUT_S)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError as exc:
        log.debug("could not switch %s to WAL mode: %s", db, exc)


def locked_error(uri: str, exc: Exception) -> TrackingError:
    return TrackingError(
        f"The sqlite tracking store {uri} stayed locked by other writers for more than "
        f"{SQLITE_BUSY_TIMEOUT_S} s ({type(exc).__name__}: {str(exc)[:200]})",
        "sqlite serialises writers; for many parallel jobs (a large joblib n_jobs, SLURM arrays, "
        "several machines) run a tracking server (mlflow server --backend-store-uri "
        "sqlite:///mlflow.db --host 127.0.0.1) and set MLFLOW_TRACKING_URI=http://127.0.0.1:5000",
    )


def is_locked(exc: Exception) -> bool:
    return "database is locked" in str(exc) or "database table is locked" in str(exc)


def quiet_mlflow_logs() -> None:
    """MLflow logs INFO chatter, and logs database errors with tracebacks before raising
    them; rnnlab reports the raised error as one paragraph instead."""
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def probe_server(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (seconds, not MLflow's minutes of retries) when a tracking server is down."""
    import urllib.error
    import urllib.request

    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout):  # noqa: S310 - the user's own server
            return
    except urllib.error.HTTPError:
        return  # it answered: a server is there (auth or routing is MLflow's to report)
    except OSError as exc:
        raise TrackingError(
            f"Cannot reach the MLflow tracking server at {uri}: {exc}",
            "Start the server (mlflow server ...) or fix tracking.uri / MLFLOW_TRACKING_URI; "
            "nothing was trained",
        ) from exc


def connect(uri: str):
    """An ``MlflowClient`` for ``uri`` that has answered once; a clear error otherwise.

    A sqlite store is switched to WAL mode (see :func:`use_wal`).
    """
    from mlflow.tracking import MlflowClient

    quiet_mlflow_logs()

    if uri.startswith(("http://", "https://")):
        probe_server(uri)

    db = sqlite_path(uri)
    if db is not None and not db.parent.is_dir():
        raise TrackingError(
            f"The tracking store {uri} is in a directory that does not exist ({db.parent})",
            "Create the directory or point tracking.uri / MLFLOW_TRACKING_URI elsewhere",
        )
    client = MlflowClient(tracking_uri=uri)
    try:
        client.search_experiments(max_results=1)
    except Exception as exc:  # any failure to reach the store is fatal before training
        raise TrackingError(
            f"Cannot reach the MLflow tracking store at {uri}: {type(exc).__name__}: {exc}",
            "Check that the server is up (or the sqlite file is writable), or set tracking.uri "
            "/ MLFLOW_TRACKING_URI to a store you can reach",
        ) from exc
    if db is not None:
        use_wal(db)
    return client


def get_run(client: Any, run_id: str, *, uri: str, asked_as: str) -> Any:
    """The MLflow run ``run_id``, or an error naming how it was asked for and the fix."""
    try:
        return client.get_run(run_id)
    except Exception as exc:
        raise TrackingError(
            f"{asked_as}: there is no run with that id in {uri}",
            "List run ids with 'rnnlab runs', or point tracking.uri / --uri / "
            "MLFLOW_TRACKING_URI at the store that holds the run",
        ) from exc


def experiment_id(client, name: str, *, uri: str) -> str:
    """The id of experiment ``name``, creating it (artifacts beside a sqlite file) if needed."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    db = sqlite_path(uri)
    location = (db.parent / "mlartifacts" / name).as_uri() if db is not None else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # created concurrently by a parallel sweep job
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


class RunLogger:
    """Writes one MLflow run: params, tags, buffered metrics, artifacts, final status."""

    def __init__(
        self,
        *,
        uri: str,
        experiment: str,
        run_name: str,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
        flush_every_s: float = 5.0,
    ) -> None:
        self.uri = uri
        self.client = connect(uri)
        self.experiment_id = experiment_id(self.client, experiment, uri=uri)
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self._write(
            self.client.create_run, self.experiment_id, run_name=run_name, tags=all_tags
        )
        self._init_state(run, flush_every_s)

    def _init_state(self, run: Any, flush_every_s: float) -> None:
        self.run_id: str = run.info.run_id
        self.run_name: str = run.info.run_name
        self.artifact_uri: str = run.info.artifact_uri
        self.flush_every_s = flush_every_s
        self._buffer: list[Any] = []
        self._last_flush = time.monotonic()
        self._floor: dict[str, int] = {}
        self.seconds_in_mlflow = 0.0
        self.ended = False

    @classmethod
    def reopen(cls, *, uri: str, run_id: str, flush_every_s: float = 5.0) -> RunLogger:
        """Continue an existing run: status back to RUNNING, and metric points at steps it
        already holds are dropped, so a resumed run has no duplicate steps."""
        self = cls.__new__(cls)
        self.uri = uri
        self.client = connect(uri)
        run = self.client.get_run(run_id)
        self.experiment_id = run.info.experiment_id
        self._init_state(run, flush_every_s)
        for key in run.data.metrics:
            steps = [m.step for m in self.client.get_metric_history(run_id, key)]
            self._floor[key] = max(steps, default=-1)
        self.client.update_run(run_id, status="RUNNING")
        return self

    # -- writing -----------------------------------------------------------------------
    def _write(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One store write; a sqlite lock that outlasts MLflow's busy timeout is a clear error."""
        try:
            return call(*args, **kwargs)
        except Exception as exc:
            if is_locked(exc):
                raise locked_error(self.uri, exc) from exc
            raise

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
        start = time.monotonic()
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self._write(
                self.client.log_batch, self.run_id, params=items[i : i + MAX_PARAMS_PER_BATCH]
            )
        self.seconds_in_mlflow += time.monotonic() - start

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        start = time.monotonic()
        self._write(
            self.client.log_batch, self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()]
        )
        self.seconds_in_mlflow += time.monotonic() - start

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        """Buffer metrics; they reach the store at the next flush."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        floor = self._floor
        self._buffer.extend(
            Metric(k, float(v), now, step)
            for k, v in metrics.items()
            if not (floor and step <= floor.get(k, -1))
        )
        if (
            len(self._buffer) >= MAX_METRICS_PER_BATCH
            or time.monotonic() - self._last_flush >= self.flush_every_s
        ):
            self.flush()

    def flush(self) -> None:
        """Write buffered metrics with ``log_batch`` (1000 per call). Synchronous on
        purpose: measured here, MLflow's async queue saved nothing on submission and cost
        ~0.9 s more at shutdown."""
        start = time.monotonic()
        while self._buffer:
            chunk = self._buffer[:MAX_METRICS_PER_BATCH]
            self._write(self.client.log_batch, self.run_id, metrics=chunk)
            del self._buffer[:MAX_METRICS_PER_BATCH]
        self._last_flush = time.monotonic()
        self.seconds_in_mlflow += self._last_flush - start

    def local_artifact_dir(self) -> Path | None:
        """The run's artifact folder when the artifact store is a local directory."""
        if self.artifact_uri.startswith("file://"):
            from urllib.parse import unquote, urlparse

            return Path(unquote(urlparse(self.artifact_uri).path))
        if "://" not in self.artifact_uri:
            return Path(self.artifact_uri)
        return None

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        start = time.monotonic()
        self._write(self.client.log_artifact, self.run_id, str(path), artifact_path)
        self.seconds_in_mlflow += time.monotonic() - start

    # -- ending ------------------------------------------------------------------------
    def end(self, status: str = "FINISHED") -> None:
        """Flush what is buffered and set the run's final status (once)."""
        if self.ended:
            return
        start = time.monotonic()
        try:
            self.flush()
        finally:
            self._write(self.client.set_terminated, self.run_id, status=status)
            self.ended = True
            self.seconds_in_mlflow += time.monotonic() - start

    def fail(self, reason: str, status: str = "FAILED") -> None:
        """Keep every metric logged so far, tag the reason, and mark the run failed.

        Called while another error propagates: if the store itself fails now (a full disk,
        a dead server), say so on stderr and let the original error through.
        """
        if self.ended:
            return
        try:
            try:
                self.flush()
            finally:
                self._write(self.client.set_tag, self.run_id, "failure_reason", reason[:5000])
                self.end(status)
        except Exception as exc:
            import sys

            self.ended = True
            print(
                f"rnnlab: warning: could not record the failure of run {self.run_id} in "
                f"MLflow ({type(exc).__name__}: {str(exc).splitlines()[0]}); it may still show as RUNNING",
                file=sys.stderr,
            )
