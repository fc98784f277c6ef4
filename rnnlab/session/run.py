"""One tracked run: open (or reopen) the MLflow run, train, write the artifacts, end the run.

:func:`run_job` is what a Hydra job does. The config is composed and checked completely
(:func:`rnnlab.compose.compose`) before the MLflow run is created; from then on every exit
path ends the run: FINISHED, KILLED on a stop signal or Ctrl-C (resumable), FAILED otherwise,
with every metric logged so far kept and a ``failure_reason`` tag.
"""

from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rnnlab.compose import RunSpec, command_options, compose
from rnnlab.session import sidecar
from rnnlab.session.record import (
    begin_recording,
    origin_tags,
    reference_lines,
    start_logging_model,
)
from rnnlab.tasks.base import DrawsFigures, ShowsAttention
from rnnlab.tracking.logger import RunLogger
from rnnlab.tracking.uri import resolve_tracking_uri
from rnnlab.train.distributed import SOLO, Ranks, check_world_size
from rnnlab.train.loop import Stopped
from rnnlab.train.run import TrainOutcome, train_model
from rnnlab.train.signals import Interrupted, Terminated, terminate_raises


def run_job(
    cfg: DictConfig,
    *,
    sweep: tuple[dict[str, str], str | None] = ({}, None),
    concurrent_jobs: int = 1,
) -> float:
    """Train a new run (or resume ``cfg.resume``); print the summary; return the objective.
    ``concurrent_jobs``: jobs the sweep's launcher runs at once (the thread policy's share)."""
    started = time.perf_counter()
    if cfg.get("resume"):
        return resume_job(cfg, started=started)
    spec = compose(cfg)
    spec.task.prepare()  # the data, and the values only the data can check: before the run
    uri = resolve_tracking_uri(spec.tracking.uri)
    tags, parent = sweep
    mlflow_start = time.perf_counter()
    opening = dict(
        uri=uri,
        experiment=spec.experiment,
        run_name=spec.run_name,
        tags={**tags, **spec.tags, **origin_tags(spec, rerun_of=cfg.get("rerun"))},
        parent_run_id=parent,
        flush_every_s=spec.tracking.flush_every_s,
        heartbeat_s=spec.tracking.heartbeat_s,
    )
    process = sidecar.take()  # MLflow imported meanwhile in a process of its own, if any
    if process is not None:  # torch for the model loads there only if a model is logged
        logger = process.open_run(**opening, preload_model=spec.tracking.log_model)
    else:
        logger = RunLogger(**opening)
    setup = time.perf_counter() - mlflow_start
    logger.log_params(spec.params)
    outcome = execute(spec, logger, config_yaml=spec.config_yaml, concurrent_jobs=concurrent_jobs)
    return finish(outcome, spec, logger, uri=uri, started=started, setup=setup)


def resume_job(cfg: DictConfig, *, started: float) -> float:
    """Continue an unfinished run from its ``last`` checkpoint, with the run's own config
    (only ``device`` and the lease's heartbeat come from this command line: the machine may
    differ). The run's lease is taken first: one writer per run (rnnlab.tracking.lease)."""
    from rnnlab.session.restore import resume_checkpoint
    from rnnlab.tracking.lease import Lease
    from rnnlab.tracking.store import connect, get_run

    options, tracking = command_options(cfg)
    run_id = str(options.resume)
    uri = resolve_tracking_uri(tracking.uri)
    client = connect(uri, writes=True)
    run = get_run(client, run_id, uri=uri, asked_as=f"resume={run_id}")
    lease = Lease.acquire(
        client, uri=uri, run=run, heartbeat_s=tracking.heartbeat_s, force=options.force
    )
    try:
        checkpoint = resume_checkpoint(client, lease.run)
        run_cfg = OmegaConf.create(checkpoint["config"])
        run_cfg.device = cfg.device
        run_cfg.force = False
        run_cfg.tracking.heartbeat_s = tracking.heartbeat_s
        spec = compose(run_cfg)
        check_world_size(checkpoint, 1, run_id=run_id)  # several ranks: rnnlab.session.spawn
        logger = RunLogger.reopen(uri=uri, lease=lease, flush_every_s=spec.tracking.flush_every_s)
    except BaseException:
        lease.release()
        raise
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
    concurrent_jobs: int = 1,
    ranks: Ranks = SOLO,
) -> TrainOutcome:
    """Train, write the artifacts and end the run; on any failure the run is ended too.
    (Rank 0 of a data-parallel group runs this; the other ranks have no run to write.)"""
    gc.enable()  # start-up is over (rnnlab.commands.train turned the collector off for it)
    try:
        with terminate_raises():
            begin_recording(spec, logger, resumed=resume is not None)
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
                concurrent_jobs=concurrent_jobs,
                ranks=ranks,
            )
            model_lines = start_logging_model(
                spec, outcome.model, logger, step=outcome.fit.epochs, config_yaml=config_yaml
            )
            write_artifacts(spec, outcome, logger, config_yaml=config_yaml)
            outcome.summary += reference_lines(spec, outcome.metrics)
            outcome.summary += model_lines()
            logger.end("FINISHED")
        return outcome
    except Terminated as term:
        stage = stage_of(logger)
        resumable = resume is not None or "last" in logger.checkpoints
        logger.fail(f"stopped by signal {term.signum} during {stage}", status="KILLED")
        raise Interrupted(
            signum=term.signum, run_id=logger.run_id, stage=stage, resumable=resumable
        ) from None
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


def stage_of(logger: RunLogger) -> str:
    """Where a run was when a signal arrived outside the training loop (what it wrote last)."""
    if "best" in logger.checkpoints:
        return "the writing of its artifacts"
    if "last" in logger.checkpoints:
        return "the final evaluation"
    return "its set-up, before training"


def write_artifacts(
    spec: RunSpec, outcome: TrainOutcome, logger: RunLogger, *, config_yaml: str
) -> None:
    """``config.yaml``, ``plots/`` (the loss curves and the task's own figures), ``samples/``
    (the task's own) and
    ``tokenizer/`` (a trained tokenizer's model files, when the task has one)."""
    from rnnlab.analysis.plots import attention_heatmap, draw_figure, plot_curves

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
        plots = [curve]
        if isinstance(task, DrawsFigures):
            for stem, figure in task.figure_data(model, outcome.results).items():
                plots.append(draw_figure(figure, out / "plots" / f"{stem}.png"))
        logger.log_artifact(out / "config.yaml")
        for path in plots:
            logger.log_artifact(path, "plots")
        for path in samples:
            logger.log_artifact(path, "samples")
        for path in task.tokenizer_files(out / "tokenizer"):
            logger.log_artifact(path, "tokenizer")


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
        # a server already serves the UI; 'rnnlab ui' starts one only for a local store
        f"browse: {uri}"
        if uri.startswith(("http://", "https://"))
        else f"browse: rnnlab ui --uri {uri}",
    ]
    print("\n".join(lines), flush=True)
    return outcome.fit.best_value
