"""Composition: a composed config (DictConfig) becomes a typed, fully validated :class:`RunSpec`.

No Hydra runtime and no MLflow here: ``rnnlab train`` (through :mod:`rnnlab.session`), the
commands that rebuild a finished run (``eval``, ``generate``, ``translate``) and the
benchmark scripts all call :func:`compose` on a config, and either get everything a run is
made of or a :class:`~rnnlab.errors.ConfigError` naming the key to fix; nothing has been
created by then.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from rnnlab.compose.build import (
    OptimizerFactory,
    SchedulerFactory,
    build_optimizer,
    build_scheduler,
    build_stack,
    build_task,
)
from rnnlab.compose.naming import flatten, run_name
from rnnlab.compose.read import check_finite, read_options
from rnnlab.compose.reference import Reference, read_reference
from rnnlab.compose.schema import RunOptions, TrackingOptions
from rnnlab.models.stack import StackSpec
from rnnlab.paths import config_dir
from rnnlab.tasks.base import Task
from rnnlab.train.device import resolve_device
from rnnlab.train.graphs import check_cuda_graphs
from rnnlab.train.settings import TrainerSettings

__all__ = ["RunSpec", "command_options", "compose"]


@dataclass
class RunSpec:
    """Everything one run is made of, typed and checked."""

    task: Task
    stack: StackSpec
    optimizer: OptimizerFactory
    scheduler: SchedulerFactory | None
    trainer: TrainerSettings
    tracking: TrackingOptions
    device: torch.device
    seed: int
    resume: str | None
    #: the published figure the preset reproduces (``reference:``), if any
    reference: Reference | None
    #: the MLflow experiment and run name, and the tags that say what ran
    experiment: str
    run_name: str
    tags: dict[str, str] = field(default_factory=dict)
    #: the resolved config, flattened (MLflow params) and as YAML (artifact, checkpoints)
    params: dict[str, Any] = field(default_factory=dict)
    config_yaml: str = ""
    #: why the preset's reference is not compared with this run (it changed the data), if so
    reference_note: str | None = None


def command_options(cfg: DictConfig) -> tuple[RunOptions, TrackingOptions]:
    """The top-level keys and ``tracking.*``, checked: all ``resume=`` reads from the command
    line before it touches the run (the rest comes from the run's own config)."""
    check_finite(cfg)
    keys = ("seed", "device", "resume", "rerun", "force")
    run = read_options(RunOptions, {k: cfg.get(k) for k in keys})
    return run, read_options(TrackingOptions, cfg.tracking)


def applicable_reference(cfg: DictConfig) -> tuple[Reference | None, str | None]:
    """The preset's reference where it holds for this run; else None and the reason (the
    run changed a value its ``when`` names, e.g. the preset on the user's own table)."""
    reference = read_reference(cfg.get("reference"))
    differs = reference.differs(cfg) if reference is not None else None
    if differs is None:
        return reference, None
    return None, reference.not_compared(differs)


def compose(cfg: DictConfig) -> RunSpec:
    """Turn a composed config into a RunSpec (no MLflow, no training)."""
    run, tracking = command_options(cfg)
    reference, reference_note = applicable_reference(cfg)
    # a run recorded before a trainer key existed (trainer.threads) takes today's default
    # for it, so eval, translate and resume still read its config
    defaults = OmegaConf.load(config_dir() / "trainer" / "default.yaml")
    trainer = read_options(TrainerSettings, OmegaConf.merge(defaults, cfg.trainer))
    device = resolve_device(run.device)
    task = build_task(cfg.task, progress=trainer.progress)
    check_cuda_graphs(
        trainer.cuda_graphs, device, task=str(cfg.task.name), fixed_shape=task.fixed_shape_steps
    )
    stack = build_stack(cfg.cell)
    task.check_stack(stack)
    optimizer = build_optimizer(cfg.optim)
    scheduler = build_scheduler(cfg.sched, optimizer)
    names = {"task": str(cfg.task.name), "cell": str(cfg.cell.name), "optim": str(cfg.optim.name)}
    return RunSpec(
        task=task,
        stack=stack,
        optimizer=optimizer,
        scheduler=scheduler,
        trainer=trainer,
        tracking=tracking,
        device=device,
        seed=run.seed,
        resume=run.resume,
        reference=reference,
        experiment=tracking.experiment or names["task"],
        run_name=run_name(cell=names["cell"], optim=names["optim"], lr=float(cfg.optim.lr)),
        tags={**names, **(reference.tags() if reference else {})},
        params=flatten(cfg),
        config_yaml=OmegaConf.to_yaml(cfg, resolve=True),
        reference_note=reference_note,
    )
