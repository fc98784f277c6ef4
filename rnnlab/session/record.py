"""What a run records beyond training's own metrics: where it came from (source, git,
command, description), the data it read (dataset inputs), system metrics, and the best weights
as an MLflow model. Each piece is a small call from :mod:`rnnlab.session.run`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rnnlab.compose import RunSpec
from rnnlab.tracking.inputs import log_data_sources
from rnnlab.tracking.logger import RunLogger
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


def nothing() -> None:
    """What stops the system metrics when none were started."""


def begin_recording(spec: RunSpec, logger: RunLogger, *, resumed: bool) -> Callable[[], None]:
    """Log the task's data as dataset inputs (new runs) and start the system metrics; returns
    the function that stops them (call it before the run ends)."""
    if not resumed:
        logger.timed(log_data_sources, logger.client, logger.run_id, spec.task.data_sources())
    if not spec.tracking.system_metrics:
        return nothing
    from rnnlab.tracking.system import start_system_metrics

    return start_system_metrics(
        uri=logger.uri,
        run_id=logger.run_id,
        interval_s=spec.tracking.system_metrics_interval_s,
        resumed=resumed,
    )


def log_model(spec: RunSpec, model: Any, logger: RunLogger, *, step: int) -> list[str]:
    """Log the best weights as the run's MLflow model (``tracking.log_model``); summary lines."""
    if not spec.tracking.log_model:
        return []
    from rnnlab.tracking.models import log_best_model

    logged = logger.timed(
        log_best_model,
        uri=logger.uri,
        run_id=logger.run_id,
        experiment_id=logger.experiment_id,
        model=model,
        task_state=spec.task.state_dict(),
        step=step,
        register_as=spec.tracking.register_model,
    )
    logger.set_tags({"model_uri": logged.uri})
    lines = [f"model: {logged.uri} (mlflow.pytorch.load_model)"]
    if logged.registered:
        lines.append(f"registered: {logged.registered}")
    return lines


def reference_lines(spec: RunSpec, metrics: dict[str, float]) -> list[str]:
    """The result beside the preset's reference, where the run measured that metric."""
    reference = spec.reference
    if reference is None:
        return []
    if reference.metric not in metrics:
        return [f"reference: {reference.describe()}; this run has no {reference.metric}"]
    return [reference.beside(metrics[reference.metric])]
