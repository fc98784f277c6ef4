"""What a run records beyond training's own metrics: where it came from (source, git,
command, description), the data it read (dataset inputs), system metrics, and the best weights
as an MLflow model. Each piece is a small call from :mod:`rnnlab.session.run`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rnnlab.compose import RunSpec
from rnnlab.tracking.logger import RunLogger
from rnnlab.tracking.serving import serving_schema
from rnnlab.tracking.source import NOTE, command_line, description, source_tags


def hydra_choice(group: str) -> str | None:
    """The option Hydra picked for ``group`` (e.g. the ``experiment`` preset), if any."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    choice = HydraConfig.get().runtime.choices.get(group)
    return str(choice) if choice not in (None, "null") else None


def origin_tags(spec: RunSpec, *, rerun_of: str | None = None) -> dict[str, str]:
    """Source, git and version tags, the command, and the markdown description."""
    command = command_line()
    preset = hydra_choice("experiment")
    reference = spec.reference.describe() if spec.reference else None
    tags = source_tags(command)
    if preset:
        tags["preset"] = preset
    if rerun_of:
        tags["rerun_of"] = rerun_of
    tags[NOTE] = description(command=command, preset=preset, reference=reference)
    return tags


def begin_recording(spec: RunSpec, logger: RunLogger, *, resumed: bool) -> None:
    """Log the task's data as dataset inputs (new runs) and start the system metrics (the
    run's end stops them)."""
    if not resumed:
        logger.log_data_sources(spec.task.data_sources())
    if spec.tracking.system_metrics:
        logger.start_system_metrics(
            interval_s=spec.tracking.system_metrics_interval_s, resumed=resumed
        )


def start_logging_model(
    spec: RunSpec, model: Any, logger: RunLogger, *, step: int, config_yaml: str
) -> Callable[[], list[str]]:
    """Log the best weights as the run's MLflow model (``tracking.log_model``), with the
    text-in pyfunc flavour where the task serves; returns the function that gives the summary
    lines once it is logged (a tracking process logs it while this process writes the other
    artifacts)."""
    if not spec.tracking.log_model:
        return list
    serving = serving_schema(spec.task)  # read before the model leaves its device
    device = next(model.parameters()).device
    model.to("cpu")  # the model is written (or sent to be written) from the CPU now
    try:
        logged = logger.log_model(
            model=model,
            task_state=spec.task.state_dict(),
            step=step,
            register_as=spec.tracking.register_model,
            serving=serving,
            config_yaml=config_yaml,
        )
    finally:
        model.to(device)  # the samples are drawn where the model trained

    def lines() -> list[str]:
        model_info = logged()
        if serving is None:
            lines = [f"model: {model_info.uri} (mlflow.pytorch.load_model)"]
        else:
            lines = [
                f"model: {model_info.uri} (mlflow.pyfunc.load_model: text in; "
                "mlflow.pytorch.load_model: the module)",
                f"serve: rnnlab serve {logger.run_id}",
            ]
        if model_info.registered:
            lines.append(f"registered: {model_info.registered}")
        return lines

    return lines


def reference_lines(spec: RunSpec, metrics: dict[str, float]) -> list[str]:
    """The result beside the preset's reference, where the run measured that metric."""
    reference = spec.reference
    if reference is None:
        return [spec.reference_note] if spec.reference_note else []
    if reference.metric not in metrics:
        return [f"reference: {reference.describe()}; this run has no {reference.metric}"]
    return [reference.beside(metrics[reference.metric])]
