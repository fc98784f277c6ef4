"""The MLflow store: connecting with clear errors, sqlite in WAL mode, experiments, runs.

Every rnnlab module that talks to MLflow goes through here (or :mod:`rnnlab.tracking.logger`,
which writes one run), so a store that cannot be reached fails in one way everywhere.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from rnnlab.errors import TrackingError
from rnnlab.tracking import schema_lock
from rnnlab.tracking.auth import check_credentials
from rnnlab.tracking.store_errors import SQLITE_BUSY_TIMEOUT_S
from rnnlab.tracking.uri import sqlite_path
from rnnlab.train.faults import hold_point

log = logging.getLogger(__name__)


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
    them; rnnlab reports the raised error as one paragraph instead. MLflow's artifact
    download bars (model logging fetches files back) would interleave with rnnlab's own
    progress, and in a log file each is a line of carriage returns: off unless the user set
    ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR``."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
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


def connect(uri: str, *, writes: bool = False):
    """An ``MlflowClient`` for ``uri`` that has answered once; a clear error otherwise.

    A store rnnlab must not open (another application's sqlite file, MLflow's legacy file
    store, a store from a newer MLflow) or cannot write (``writes``: a read-only file) is
    refused before MLflow touches it (:mod:`rnnlab.tracking.store_errors`). A new sqlite
    store is created, and one whose schema is behind is upgraded or repaired, by one process
    at a time (:mod:`rnnlab.tracking.schema_lock`). A sqlite store is switched to WAL mode
    (see :func:`use_wal`).
    """
    from mlflow.tracking import MlflowClient

    from rnnlab.tracking.store_errors import refuse_unusable, store_error

    quiet_mlflow_logs()
    refuse_unusable(uri, writes=writes)
    hold_point("store.open")  # the tests of racing processes release them together here

    if uri.startswith(("http://", "https://")):
        probe_server(uri)
        check_credentials(uri)  # a missing or wrong password: one clear error, no retries

    db = sqlite_path(uri)
    if db is not None and not db.parent.is_dir():
        raise TrackingError(
            f"The tracking store {uri} is in a directory that does not exist ({db.parent})",
            "Create the directory or point tracking.uri / MLFLOW_TRACKING_URI elsewhere",
        )
    try:
        with schema_lock.guard(uri):  # creates, upgrades or repairs a sqlite store under its lock
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)
    except TrackingError:
        raise
    except Exception as exc:  # any failure to reach the store is fatal before training
        known = store_error(uri, exc)
        if known is not None:
            raise known from exc
        if is_locked(exc):
            raise locked_error(uri, exc) from exc
        raise TrackingError(
            f"Cannot reach the MLflow tracking store at {uri}: {type(exc).__name__}: {exc}",
            "Check that the server is up (or the sqlite file is writable), or set tracking.uri "
            "/ MLFLOW_TRACKING_URI to a store you can reach",
        ) from exc
    if db is not None:
        use_wal(db)
    return client


def prepare(uri: str) -> None:
    """Create, upgrade or repair a sqlite store under its schema lock before an MLflow server
    (``mlflow ui``, ``mlflow server``) opens it, as it would without the lock; for an
    up-to-date store, one read-only query and nothing else (no MLflow import)."""
    if schema_lock.needs_migration(uri):
        connect(uri, writes=True)


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


def artifact_folder(root: Path, name: str) -> Path:
    """The folder under ``root`` for experiment ``name``'s artifacts. A name is not a path:
    ``/tmp/x`` or ``../../x`` must not write outside the store, so every character outside
    ``[A-Za-z0-9._-]`` becomes ``_`` (two names may share a folder: runs have their own)."""
    import re

    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "experiment"
    folder = (root / slug).resolve()
    if not folder.is_relative_to(root.resolve()):  # cannot happen after the slug; the rule
        raise TrackingError(
            f"tracking.experiment={name!r} maps outside the artifact root {root}",
            "Use a plain name (letters, digits, . _ -)",
        )
    return folder


def experiment_id(client, name: str, *, uri: str) -> str:
    """The id of experiment ``name``, creating it (artifacts beside a sqlite file) if needed."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        mark_training(client, experiment, uri=uri)
        return experiment.experiment_id
    db = sqlite_path(uri)
    location = artifact_folder(db.parent / "mlartifacts", name).as_uri() if db else None
    try:
        return client.create_experiment(name, artifact_location=location, tags=TRAINING_KIND)
    except Exception:  # created concurrently by a parallel sweep job
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        mark_training(client, experiment, uri=uri)
        return experiment.experiment_id


#: MLflow 3's experiment-kind tag for model training: the UI opens such an experiment on its
#: training runs, not on the GenAI traces overview (the value the UI's kind selector writes)
TRAINING_KIND = {"mlflow.experimentKind": "custom_model_development"}


def mark_training(client: Any, experiment: Any, *, uri: str) -> None:
    """Tag an existing experiment as model training, unless it already says what it is
    (a user who picked another kind in the UI keeps it). A server that refuses the tag
    (a user who may only read the experiment) gets its one-paragraph error here."""
    from rnnlab.tracking.auth import denied

    ((key, value),) = TRAINING_KIND.items()
    if key in experiment.tags:
        return
    try:
        client.set_experiment_tag(experiment.experiment_id, key, value)
    except Exception as exc:
        if (forbidden := denied(uri, exc)) is not None:
            raise forbidden from exc
        raise


def has_artifact(client: Any, run_id: str, path: str) -> bool:
    """Whether run ``run_id`` holds the artifact ``path`` (e.g. ``checkpoints/last.pt``)."""
    folder = path.rpartition("/")[0] or None
    return any(f.path == path for f in client.list_artifacts(run_id, folder))


def download_checkpoint(client: Any, run_id: str, which: str, dst: Path) -> Path:
    """Fetch ``checkpoints/<which>.pt`` of ``run_id`` into the folder ``dst``."""
    try:
        return Path(client.download_artifacts(run_id, f"checkpoints/{which}.pt", str(dst)))
    except Exception as exc:
        raise TrackingError(
            f"Run {run_id} has no checkpoints/{which}.pt artifact ({type(exc).__name__})",
            "Only runs that finished training have one; list runs with 'rnnlab runs'",
        ) from exc


def search_runs_frame(
    uri: str, experiment_ids: list[str], *, filter_string: str, max_results: int
) -> Any:
    """MLflow's own ``search_runs`` pandas frame; a clear error for a bad filter."""
    import mlflow

    from rnnlab.errors import RnnlabError

    # set_tracking_uri is process-wide and exports MLFLOW_TRACKING_URI: undo the export after
    exported = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        return mlflow.search_runs(
            experiment_ids=experiment_ids,
            filter_string=filter_string,
            max_results=max_results,
            output_format="pandas",
        )
    except Exception as exc:
        from rnnlab.tracking.store_errors import store_error

        known = store_error(uri, exc)
        if known is not None:
            raise known from exc
        if not isinstance(exc, mlflow.exceptions.MlflowException):
            raise
        raise RnnlabError(
            f'MLflow could not use the filter "{filter_string}": {exc.message}',
            "Write it in MLflow's search syntax, e.g. --where \"params.optim._target_ LIKE "
            '\'%RMSprop%\'" or --where "metrics.`val/loss` < 1" (backquote keys with / or -)',
        ) from exc
    finally:
        if exported is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = exported
