"""A run's model as text in, a table out: the ``python_function`` flavour of rnnlab's logged
models, beside their ``pytorch`` flavour in one MLmodel.

:func:`save_model` (the flavour ``Model.log`` calls) first has ``mlflow.pytorch.save_model``
write the pickled module (``data/``), the task state with its vocabularies and sentencepiece
models (``extra_files/task_state.pt``), the requirements and the signature, so
``mlflow.pytorch.load_model`` gives back the ``nn.Module`` as before. It then points the
``python_function`` flavour at this module (MLflow's custom-flavour form, a ``loader_module``:
``mlflow.pyfunc.PythonModel`` writes a model of its own and could not share the pytorch
flavour's files) and adds the run's resolved config and the task's :class:`ServingSchema`
(``rnnlab/``). ``mlflow.pyfunc.load_model``, ``mlflow models serve``, ``rnnlab serve`` and
``mlflow.pyfunc.spark_udf`` all load it through :func:`_load_pyfunc`: the task rebuilt from
the config (no corpus read), its state loaded, the module on the CPU or CUDA.

A task is served by implementing :class:`~rnnlab.tasks.base.Serves`; nothing here names a
task. Every request is checked here against the task's schema (a missing column, a row that
is not a string, empty or too long) and refused with one sentence, as MLflow's
``INVALID_PARAMETER_VALUE``: the scoring server answers it with HTTP 400 and stays up.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rnnlab.errors import RnnlabError
from rnnlab.tasks.base import OUTPUT_TYPES, Serves, ServingSchema, Task

#: the module MLflow imports to load the python_function flavour (this one)
LOADER = __name__
SERVING_FILE = "rnnlab/serving.json"
CONFIG_FILE = "rnnlab/config.yaml"
TASK_STATE_FILE = "extra_files/task_state.pt"

#: a param's MLflow type, from its default's Python type (bool before int: a bool is an int)
PARAM_TYPES = ((bool, "boolean"), (int, "long"), (float, "double"), (str, "string"))


def param_type(name: str, default: Any) -> str:
    for python_type, mlflow_type in PARAM_TYPES:
        if isinstance(default, python_type):
            return mlflow_type
    raise TypeError(f"param {name}: a default of type {type(default).__name__} cannot be served")


def signature(schema: ServingSchema):
    """The MLflow signature of ``schema``: one string column in, its outputs, its params."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import Array

    def column_type(kind: str):
        if kind not in OUTPUT_TYPES:
            raise TypeError(f"output type {kind!r} is not one of {', '.join(OUTPUT_TYPES)}")
        if kind.endswith("[]"):
            return Array(DataType[kind[:-2]])
        return DataType[kind]

    outputs = [ColSpec(column_type(kind), name) for name, kind in schema.outputs.items()]
    params = [
        ParamSpec(name, param_type(name, default), default)
        for name, default in schema.params.items()
    ]
    return ModelSignature(
        inputs=Schema([ColSpec(DataType.string, schema.column)]),
        outputs=Schema(outputs),
        params=ParamSchema(params) if params else None,
    )


def save_model(
    path: str,
    mlflow_model: Any,
    *,
    pytorch_model: Any,
    task_state: dict[str, Any],
    config_yaml: str,
    schema: ServingSchema,
    pip_requirements: list[str],
    **_: Any,
) -> None:
    """Write the model at ``path``: the pytorch flavour, then this module as its pyfunc.
    (``Model.log`` passes its own keyword arguments on too; they are not this flavour's.)"""
    import mlflow.pyfunc
    import mlflow.pytorch
    import pandas as pd
    import torch

    root = Path(path)
    with tempfile.TemporaryDirectory(prefix="rnnlab-model-") as tmp:
        state_file = Path(tmp) / Path(TASK_STATE_FILE).name
        torch.save(task_state, state_file)
        mlflow.pytorch.save_model(
            pytorch_model,
            path,
            mlflow_model=mlflow_model,
            signature=signature(schema),
            input_example=pd.DataFrame({schema.column: schema.example}),
            extra_files=[str(state_file)],
            pip_requirements=pip_requirements,
            serialization_format="pickle",  # see rnnlab.tracking.models
        )
    torch_pyfunc = mlflow_model.flavors.pop(mlflow.pyfunc.FLAVOR_NAME)
    mlflow.pyfunc.add_to_model(
        mlflow_model,
        loader_module=LOADER,
        conda_env=torch_pyfunc["env"]["conda"],
        python_env=torch_pyfunc["env"]["virtualenv"],
        model_config={"device": None, "threads": None},  # the keys a load may set
    )
    (root / CONFIG_FILE).parent.mkdir(parents=True, exist_ok=True)
    (root / CONFIG_FILE).write_text(config_yaml, encoding="utf-8")
    (root / SERVING_FILE).write_text(json.dumps(asdict(schema), indent=2), encoding="utf-8")
    mlflow_model.save(str(root / "MLmodel"))


def serving_schema(task: Task) -> ServingSchema | None:
    """The task's schema where it serves (:class:`Serves`), else None (a tensor model)."""
    return task.serving_schema() if isinstance(task, Serves) else None


# -- loading ---------------------------------------------------------------------------------
def pick_device(asked: str | None):
    """``cuda`` where torch sees one (or asked), else ``cpu``; a CUDA ask without one is an
    error naming the fix."""
    import torch

    if asked in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if asked.startswith("cuda") and not torch.cuda.is_available():
        raise RnnlabError(
            f"model_config device={asked}, but torch sees no CUDA device here",
            "Load it with device cpu (or auto)",
        )
    return torch.device(asked)


def rebuild_task(config_yaml: str, task_state: dict[str, Any], device: Any) -> Task:
    """The run's task from its resolved config, with its state (vocabularies, tokenizers):
    what :mod:`rnnlab.session.restore` does, without the tracking store or the corpus."""
    from omegaconf import OmegaConf

    from rnnlab.compose import build_task

    task = build_task(OmegaConf.create(config_yaml).task, progress=False)
    task.load_state_dict(task_state)
    return task.to(device)


def _load_pyfunc(path: str, model_config: dict[str, Any] | None = None) -> TextModel:
    """MLflow's entry point: ``path`` is the model's root (the flavour names no data)."""
    import mlflow.pytorch
    import torch

    root = Path(path)
    config = model_config or {}
    device = pick_device(config.get("device"))
    if config.get("threads"):
        # Each serving worker is a process with its own torch pool: rnnlab serve shares the
        # cores among them instead of letting each take them all (docs/serving.md, "Threads").
        torch.set_num_threads(int(config["threads"]))
    schema = ServingSchema(**json.loads((root / SERVING_FILE).read_text(encoding="utf-8")))
    state = torch.load(root / TASK_STATE_FILE, map_location="cpu", weights_only=False)
    task = rebuild_task((root / CONFIG_FILE).read_text(encoding="utf-8"), state, device)
    module = mlflow.pytorch.load_model(str(root), map_location=device)
    module.eval()
    return TextModel(task=task, module=module, schema=schema)


class TextModel:
    """The loaded pyfunc: checks a request against the task's schema, then asks the task."""

    def __init__(self, *, task: Any, module: Any, schema: ServingSchema) -> None:
        self.task, self.module, self.schema = task, module, schema

    def get_raw_model(self) -> Any:
        """The ``nn.Module`` (``PyFuncModel.get_raw_model()``), on the device it was loaded on."""
        return self.module

    def predict(self, model_input: Any, params: dict[str, Any] | None = None):
        import pandas as pd

        rows = self.rows(model_input)
        chosen = {**self.schema.params, **(params or {})}
        try:
            out = self.task.serve(self.module, rows, chosen)
        except RnnlabError as exc:
            raise bad_request(str(exc)) from None
        # every declared column, those this request did not fill as nulls: one table shape
        # per model, as the signature (and a Spark UDF's struct) states it
        missing = [None] * len(rows)
        return pd.DataFrame({k: out.get(k, missing) for k in self.schema.outputs})

    def rows(self, model_input: Any) -> list[str]:
        """The input column's values, each a non-empty string within ``max_chars``."""
        import pandas as pd

        column = self.schema.column
        if isinstance(model_input, pd.DataFrame):
            if column not in model_input.columns:
                found = ", ".join(map(str, model_input.columns)) or "none"
                raise bad_request(f"The input has no column '{column}' (it has {found})")
            values = model_input[column].tolist()
        elif isinstance(model_input, dict) and column in model_input:
            values = list(model_input[column])
        else:  # a list or Series of strings: the one column
            values = list(model_input)
        problem = rows_problem(values, self.schema)
        if problem:
            raise bad_request(problem)
        return values


def rows_problem(values: list[Any], schema: ServingSchema) -> str | None:
    """What is wrong with the input column's ``values``, in one sentence, or None: each must
    be a string (not missing), hold some text, and be at most ``max_chars`` long."""
    column, limit = schema.column, schema.max_chars
    if not values:
        return f"The input has no rows: send one string per row in '{column}'"
    for i, value in enumerate(values):
        if not isinstance(value, str):
            kind = type(value).__name__
            article = "an" if kind[0] in "aeiou" else "a"
            shown = "missing" if value is None or value != value else f"{article} {kind}"
            return f"Row {i} of '{column}' is {shown}, not a string"
        if not value.strip():
            return f"Row {i} of '{column}' is empty: send some text"
        if len(value) > limit:
            return (
                f"Row {i} of '{column}' is {len(value):,} characters long, over this model's "
                f"limit of {limit:,}: split it into shorter rows"
            )
    return None


def bad_request(sentence: str):
    """The error MLflow's scoring server answers with HTTP 400 (INVALID_PARAMETER_VALUE)."""
    from mlflow.exceptions import MlflowException

    return MlflowException.invalid_parameter_value(
        sentence if sentence.endswith(".") else f"{sentence}."
    )
