"""The MLflow server app that ``rnnlab ui`` and ``rnnlab server`` (without ``--auth``) run: MLflow's own, opening
on *Model training* in a browser that has not chosen a view yet.

MLflow 3.17's UI takes an experiment's kind from a per-browser switch ("GenAI" | "Model
training", kept in localStorage under ``mlflow.workflowType_v1``, default GenAI) rather than
from the experiment's ``mlflow.experimentKind`` tag, so a new user would land on an empty
traces overview. This factory (registered as the ``mlflow.app`` entry point ``rnnlab``, the
hook ``mlflow server --app-name`` reads) adds one thing to MLflow's Flask app: the index page sets
that switch to Model training when the browser holds no choice. A choice the user makes in the
UI is stored there and kept. (``--auth`` runs MLflow's ``basic-auth`` app unchanged: MLflow
bootstraps its admin only under that name.)
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from rnnlab.errors import TrackingError

#: the name ``mlflow server --app-name`` looks up among the ``mlflow.app`` entry points
APP_NAME = "rnnlab"

#: runs before the UI's own scripts, which read the switch once at start
TRAINING_DEFAULT = (
    "<script>try{var k='mlflow.workflowType_v1';"
    "if(window.localStorage.getItem(k)===null)"
    "{window.localStorage.setItem(k,JSON.stringify('machine_learning'))}}catch(e){}</script>"
)


def open_on_training(flask_app: Any) -> Any:
    """``flask_app`` with the index page defaulting the UI to Model training."""
    from flask import request

    @flask_app.after_request
    def default_view(response: Any) -> Any:
        if request.endpoint != "serve" or response.status_code != 200:
            return response  # an API call, an asset, or a 304 the browser answers from cache
        response.direct_passthrough = False
        page = response.get_data(as_text=True)
        if TRAINING_DEFAULT not in page:  # once, however many times the app was wrapped
            response.set_data(page.replace("<head>", "<head>" + TRAINING_DEFAULT, 1))
        return response

    return flask_app


def require_plugin() -> None:
    """A clear error, before any server starts, when rnnlab's ``mlflow.app`` entry point is not
    installed (metadata from an install older than the plugin): MLflow would exit with a
    traceback listing the apps it found."""
    if not any(e.name == APP_NAME for e in entry_points(group="mlflow.app")):
        raise TrackingError(
            f"rnnlab's MLflow UI app (the mlflow.app entry point '{APP_NAME}') is not "
            "installed: this environment's rnnlab metadata predates it",
            "Reinstall rnnlab in it (make install, or pip install -e . in the checkout)",
        )


def create_app() -> Any:
    """``--app-name rnnlab``: MLflow's server (FastAPI around its Flask app), as ``mlflow ui``."""
    from mlflow.server import app
    from mlflow.server.fastapi_app import create_fastapi_app

    return create_fastapi_app(open_on_training(app))
