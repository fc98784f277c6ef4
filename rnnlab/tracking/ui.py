"""``rnnlab ui``: the MLflow UI on loopback against rnnlab's tracking store."""

from __future__ import annotations

import os
import sys

import click

from rnnlab.errors import TrackingError
from rnnlab.tracking.store import prepare
from rnnlab.tracking.ui_app import APP_NAME, require_plugin
from rnnlab.tracking.uri import resolve_tracking_uri, sqlite_path

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def ui_command(*, uri: str, host: str, port: int, workers: int = 1) -> list[str]:
    """The ``mlflow ui`` command line for ``uri`` (one worker: a local, single-user UI)."""
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    db = sqlite_path(uri)
    if db is not None:
        command += ["--default-artifact-root", (db.parent / "mlartifacts").as_uri()]
    command += ["--app-name", APP_NAME]  # MLflow's UI, opening on Model training: ui_app.py
    return [*command, "--host", host, "--port", str(port), "--workers", str(workers)]


#: MLflow 3.17's UI takes an experiment's kind from a per-browser switch ("GenAI" | "Model
#: training"), not from the experiment's ``mlflow.experimentKind`` tag; the app rnnlab serves
#: (``ui_app.py``) makes Model training a new browser's default
TRAINING_HINT = (
    "rnnlab's runs are under 'Model training' (the UI opens there unless you picked GenAI "
    "at its top left)"
)


def serve(*, uri: str | None, host: str, port: int, workers: int = 1) -> None:
    """Replace this process with the MLflow UI server (Ctrl-C stops it).

    MLflow's background job runner (GenAI scorers, a pool of huey consumers) is off unless
    ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION`` says otherwise: rnnlab's runs never use it.
    """
    uri = resolve_tracking_uri(uri)
    if uri.startswith(("http://", "https://")):
        raise TrackingError(
            f"{uri} is already a tracking server, so there is nothing to start",
            "Open that address in a browser",
        )
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        raise TrackingError(
            f"No tracking store at {db}",
            "Train something first (rnnlab train ...), or pass --uri / set MLFLOW_TRACKING_URI",
        )
    prepare(uri)  # a schema mlflow ui would create or upgrade: here, under rnnlab's lock
    require_plugin()
    if host not in LOOPBACK:
        click.echo(
            f"warning: binding {host} exposes the MLflow UI (and its REST API, which can delete "
            "runs) to the network; it has no authentication",
            err=True,
        )
    click.echo(f"MLflow UI on http://{host}:{port} for {uri} (Ctrl-C to stop)", err=True)
    click.echo(TRAINING_HINT, err=True)
    command = ui_command(uri=uri, host=host, port=port, workers=workers)
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)
