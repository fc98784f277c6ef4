"""Which MLflow store a run writes to: ``tracking.uri``, else ``MLFLOW_TRACKING_URI``, else
``sqlite:///mlflow.db`` in the working directory (made absolute, so that launchers that
change directory still write to the same file)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DB = "mlflow.db"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The tracking URI to use, by precedence: explicit, environment, local sqlite file."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_DB}"
    return absolutize(uri)


def absolutize(uri: str) -> str:
    """Make a relative ``sqlite:///file`` or plain-path URI absolute against the cwd."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{(Path.cwd() / uri[len('sqlite:///') :]).resolve()}"
    if "://" not in uri and not uri.startswith("sqlite:"):
        return Path(uri).resolve().as_uri()
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file behind a sqlite URI, or None for other stores."""
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None
