"""The best weights as an MLflow model: ``mlflow.pytorch.log_model``, linked to the run.

In MLflow 3 a logged model is a LoggedModel (``models:/<model_id>``) whose source run is the
training run; ``mlflow.pytorch.load_model(uri)`` gives back the ``nn.Module``. The task's
state (vocabularies, tokenizer) is saved beside it as ``extra_files/task_state.pt``, since
the module alone cannot turn text into ids. A task that serves (every built-in one) also gets
the text-in ``python_function`` flavour of :mod:`rnnlab.tracking.serving` in the same model.
Requirements are stated, not inferred: MLflow's inference imports the model in a subprocess,
which costs seconds per run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rnnlab
from rnnlab.tasks.base import ServingSchema

#: the name of the model inside the run (MLflow 3's ``name``, formerly ``artifact_path``)
MODEL_NAME = "model"
TASK_STATE = "task_state.pt"


@dataclass
class LoggedModel:
    uri: str
    model_id: str
    registered: str | None = None


def requirements() -> list[str]:
    import torch

    return [f"torch=={torch.__version__.split('+')[0]}", f"rnnlab=={rnnlab.__version__}"]


@contextlib.contextmanager
def in_experiment(experiment_id: str) -> Iterator[None]:
    """Make ``experiment_id`` the one MLflow's fluent API files a logged model under: without
    an active run it takes $MLFLOW_EXPERIMENT_ID, else the Default experiment, whose
    artifacts go to ./mlruns in the working directory, away from the run's."""
    saved = {k: os.environ.pop(k, None) for k in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")}
    os.environ["MLFLOW_EXPERIMENT_ID"] = experiment_id
    try:
        yield
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None)
            if value is not None:
                os.environ[key] = value


def log_best_model(
    *,
    uri: str,
    run_id: str,
    experiment_id: str,
    model: Any,
    task_state: dict[str, Any],
    step: int,
    register_as: str | None = None,
    serving: ServingSchema | None = None,
    config_yaml: str = "",
) -> LoggedModel:
    """Log ``model`` (the best weights, on the CPU) as run ``run_id``'s MLflow model: with a
    task that serves (``serving``), one MLmodel with the pytorch flavour and the text-in pyfunc
    of :mod:`rnnlab.tracking.serving`; otherwise the pytorch flavour alone."""
    import mlflow

    mlflow.set_tracking_uri(uri)  # the fluent API log_model uses reads the global URI
    # MLflow warns on every pickled model; docs/tracking.md says it once (load only your own)
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    common = {
        "name": MODEL_NAME,
        "run_id": run_id,
        "step": step,
        "registered_model_name": register_as,
        "await_registration_for": 0,
        "pip_requirements": requirements(),
        # a pickled module: pt2 (the default with recent torch) traces forward on an
        # example input, which a recurrent model with a state argument does not fit
        "serialization_format": "pickle",
    }
    with in_experiment(experiment_id):
        if serving is None:
            info = log_torch_model(model.to("cpu"), task_state, **common)
        else:
            from mlflow.models import Model

            from rnnlab.tracking import serving as flavour

            info = Model.log(
                artifact_path=None,
                flavor=flavour,
                pytorch_model=model.to("cpu"),
                task_state=task_state,
                config_yaml=config_yaml,
                schema=serving,
                # MLflow would load the model a second time here to predict its input
                # example: seconds and the model's memory again in the tracking process, for
                # a warning only (tests/test_serving.py predicts the example instead)
                validate_serving_input=False,
                **common,
            )
    registered = None
    if register_as is not None and info.registered_model_version is not None:
        registered = f"models:/{register_as}/{info.registered_model_version}"
    return LoggedModel(uri=info.model_uri, model_id=info.model_id, registered=registered)


def log_torch_model(model: Any, task_state: dict[str, Any], **options: Any) -> Any:
    """``mlflow.pytorch.log_model`` with the task state beside it (a task that does not
    serve: its model takes tensors)."""
    import mlflow.pytorch
    import torch

    with tempfile.TemporaryDirectory(prefix="rnnlab-model-") as tmp:
        extra = []
        if task_state:
            path = Path(tmp) / TASK_STATE
            torch.save(task_state, path)
            extra.append(str(path))
        return mlflow.pytorch.log_model(model, extra_files=extra or None, **options)


def load_task_state(model_uri: str) -> dict[str, Any]:
    """The task state logged beside a model (empty where the task keeps none)."""
    import mlflow
    import torch

    try:
        local = mlflow.artifacts.download_artifacts(f"{model_uri}/extra_files/{TASK_STATE}")
    except Exception:  # no task state was logged: the task keeps none (bitcount)
        return {}
    return torch.load(local, map_location="cpu", weights_only=False)
