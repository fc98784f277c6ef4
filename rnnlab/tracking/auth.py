"""Credentials for a tracking server with authentication (``rnnlab server --auth``).

MLflow's client sends the credentials it finds (``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD``, ``~/.mlflow/credentials``, ``MLFLOW_TRACKING_TOKEN``) with every
request. A missing or wrong password is answered 401 by the server; :func:`check_credentials`
asks once, without retries, before anything is created, so a client fails in a second with
one paragraph saying which, instead of a traceback from deep inside a run.
"""

from __future__ import annotations

from rnnlab.errors import TrackingError

#: seconds the one credentials request may take (the server is already known to be up)
CHECK_TIMEOUT_S = 10
SEARCH = "/api/2.0/mlflow/experiments/search"


def check_credentials(uri: str) -> None:
    """A clear error when the server at ``uri`` refuses this client's credentials."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    creds = get_default_host_creds(uri)
    response = http_request(
        creds,
        SEARCH,
        "POST",
        json={"max_results": 1},
        max_retries=0,  # 401/403 are answers, not transient failures: ask once
        timeout=CHECK_TIMEOUT_S,
        raise_on_status=False,
    )
    if response.status_code == 401:
        raise refused(uri, creds.username, has_password=bool(creds.password or creds.token))
    if response.status_code == 403:
        raise TrackingError(
            f"The MLflow tracking server at {uri} gives user {creds.username!r} no permission "
            "to list experiments (HTTP 403); nothing was created there",
            "Ask the server's admin to grant you READ (to train: EDIT) on the experiment, "
            "see docs/team.md",
        )


def refused(uri: str, username: str | None, *, has_password: bool) -> TrackingError:
    """The error for a 401: no credentials sent, or credentials the server refused."""
    if username is None or not has_password:
        return TrackingError(
            f"The MLflow tracking server at {uri} needs a user name and password (HTTP 401), "
            "and this client has none; nothing was created there",
            "Set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or write them to "
            "~/.mlflow/credentials) to your account on that server, see docs/team.md",
        )
    return TrackingError(
        f"The MLflow tracking server at {uri} refused the password of user {username!r} "
        "(HTTP 401); nothing was created there",
        "Check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or ~/.mlflow/credentials); "
        "the server's admin can reset a password, see docs/team.md",
    )


def denied(uri: str, exc: Exception) -> TrackingError | None:
    """The error for a write the server forbids (HTTP 403: the user may read the experiment
    but not write to it, MLflow's default for experiments someone else created); None for
    any other failure."""
    if getattr(exc, "error_code", None) != "PERMISSION_DENIED":
        return None
    from mlflow.utils.credentials import read_mlflow_creds

    return TrackingError(
        f"The MLflow tracking server at {uri} does not let user "
        f"{read_mlflow_creds().username!r} write there (HTTP 403 Permission denied)",
        "Ask the server's admin for EDIT permission on the experiment, or train into an "
        "experiment of your own (tracking.experiment=NAME); see docs/team.md",
    )
