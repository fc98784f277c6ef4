"""One tracked run: open (or reopen) the MLflow run, train, write the artifacts, end the run.

:func:`run_job` is what a Hydra job does. The config is composed and checked completely
(:func:`rnnlab.compose.compose`) before the MLflow run is created; from then on every exit
path ends the run: FINISHED, KILLED on a stop signal or Ctrl-C (resumable), FAILED otherwise,
with every metric logged so far kept and a ``failure_reason`` tag.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rnnlab.compose import RunSpec, compose
from rnnlab.tasks.base import ShowsAttention
from rnnlab.tracking.logger import RunLogger
from rnnlab.tracking.uri import resolve_tracking_uri
from rnnlab.train.distributed import SOLO, Ranks, check_world_size
from rnnlab.train.loop import Stopped
from rnnlab.train.run import TrainOutcome, train_model
from rnnlab.train.signals import Interrupted


def run_job(cfg: DictConfig, *, sweep: tuple[dict[str, str], str | None] = ({}, None)) -> float:
    """Train a new run (or resume ``cfg.resume``); print the summary; return the objective."""
    started = time.perf_counter()
    if cfg.get("resume"):
        return resume_job(cfg, started=started)
    spec = compose(cfg)
    uri = resolve_tracking_uri(spec.tracking.uri)
    tags, parent = sweep
    mlflow_start = time.perf_counter()
    logger = RunLogger(
        uri=uri,
        experiment=spec.experiment,
        run_name=spec.run_name,
        tags={**tags, **spec.tags},
        parent_run_id=parent,
        flush_every_s=spec.tracking.flush_every_s,
    )
    setup = time.perf_counter() - mlflow_start
    logger.log_params(spec.params)
    outcome = execute(spec, logger, config_yaml=spec.config_yaml)
    return finish(outcome, spec, logger, uri=uri, started=started, setup=setup)


def resume_job(cfg: DictConfig, *, started: float) -> float:
    """Continue an unfinished run from its ``last`` checkpoint, with the run's own config
    (only ``device`` comes from this command line: the machine may differ)."""
    from rnnlab.session.restore import resume_checkpoint

    run_id = str(cfg.resume)
    uri = resolve_tracking_uri(cfg.tracking.uri)
    checkpoint = resume_checkpoint(run_id, uri)
    run_cfg = OmegaConf.create(checkpoint["config"])
    run_cfg.device = cfg.device
    spec = compose(run_cfg)
    check_world_size(checkpoint, 1, run_id=run_id)  # several ranks: rnnlab.session.spawn
    logger = RunLogger.reopen(uri=uri, run_id=run_id, flush_every_s=spec.tracking.flush_every_s)
    epoch = checkpoint["progress"]["epoch"]
    print(f"resuming run {logger.run_name} ({run_id}) at epoch {epoch}", flush=True)
    outcome = execute(spec, logger, config_yaml=checkpoint["config"], resume=checkpoint)
    return finish(outcome, spec, logger, uri=uri, started=started, setup=0.0)


def execute(
    spec: RunSpec,
    logger: RunLogger,
    *,
    config_yaml: str,
    resume: dict[str, Any] | None = None,
    ranks: Ranks = SOLO,
) -> TrainOutcome:
    """Train, write the artifacts and end the run; on any failure the run is ended too.
    (Rank 0 of a data-parallel group runs this; the other ranks have no run to write.)"""
    try:
        outcome = train_model(
            task=spec.task,
            stack=spec.stack,
            optimizer=spec.optimizer,
            scheduler=spec.scheduler,
            settings=spec.trainer,
            recorder=logger,
            device=spec.device,
            seed=spec.seed,
            config_yaml=config_yaml,
            resume=resume,
            ranks=ranks,
        )
        write_artifacts(spec, outcome, logger, config_yaml=config_yaml)
        logger.end("FINISHED")
        return outcome
    except Stopped as stop:
        logger.fail(f"stopped by signal {stop.signum}; resumable", status="KILLED")
        progress = stop.progress
        raise Interrupted(
            signum=stop.signum, run_id=logger.run_id, epoch=progress.epoch, step=progress.step
        ) from None
    except KeyboardInterrupt:
        logger.fail("interrupted by the user (Ctrl-C)", status="KILLED")
        raise
    except BaseException as exc:
        logger.fail(f"{type(exc).__name__}: {exc}")
        raise


def write_artifacts(
    spec: RunSpec, outcome: TrainOutcome, logger: RunLogger, *, config_yaml: str
) -> None:
    """``config.yaml``, ``plots/`` (the loss curves) and ``samples/`` (the task's own)."""
    from rnnlab.analysis.plots import attention_heatmap, plot_curves

    task, model = spec.task, outcome.model
    with tempfile.TemporaryDirectory(prefix="rnnlab-") as tmp:
        out = Path(tmp)
        (out / "config.yaml").write_text(config_yaml)
        curves = {k: v for k, v in outcome.fit.history.items() if k.endswith("/loss")}
        curve = plot_curves(curves, out / "plots" / "loss_curve.png", title=logger.run_name)
        samples = task.write_artifacts(model, out / "samples", outcome.results)
        if isinstance(task, ShowsAttention):
            for i, attention in enumerate(task.attention_maps(model)):
                path = out / "samples" / f"attention_val_{i}.png"
                samples.append(attention_heatmap(attention, path))
        logger.log_artifact(out / "config.yaml")
        logger.log_artifact(curve, "plots")
        for path in samples:
            logger.log_artifact(path, "samples")


def finish(
    outcome: TrainOutcome,
    spec: RunSpec,
    logger: RunLogger,
    *,
    uri: str,
    started: float,
    setup: float,
) -> float:
    """Print the end-of-run summary; returns the objective for sweepers."""
    total = time.perf_counter() - started
    in_mlflow = setup + logger.seconds_in_mlflow
    lines = [
        f"run {logger.run_name} finished ({logger.run_id})",
        *outcome.summary,
        f"time: {total:.1f} s ({in_mlflow:.1f} s in MLflow), device {spec.device}",
        f"browse: rnnlab ui --uri {uri}",
    ]
    print("\n".join(lines), flush=True)
    return outcome.fit.best_value
