"""The Hydra entry point of ``rnnlab train``: the only module that reads a DictConfig.

It composes the config, turns each group into typed Python objects with
``hydra.utils.instantiate`` (cells, optimizers and schedulers are ``_partial_``), opens the
MLflow run, and hands everything to :func:`rnnlab.train.run.train_run`.
"""

from __future__ import annotations

import errno
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from rnnlab.errors import ConfigError, DivergenceError, RnnlabError
from rnnlab.paths import config_dir

NAME_KEY = "name"
WRITE_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.EFBIG}


def debug_enabled() -> bool:
    return os.environ.get("RNNLAB_DEBUG", "") not in ("", "0")


def build(node: DictConfig, what: str, **kwargs: Any) -> Any:
    """``instantiate`` a config node without its ``name`` key, as a clear ConfigError on failure."""
    from hydra.utils import instantiate

    params = OmegaConf.to_container(node, resolve=True)
    params.pop(NAME_KEY, None)
    target = params.get("_target_", "?")
    try:
        return instantiate(params, _convert_="all", **kwargs)
    except Exception as exc:
        cause = exc.__cause__ or exc
        fix = f"Check the {what} values you set on the command line (rnnlab train --cfg job shows them)"
        if isinstance(cause, ImportError) or "Error locating target" in str(exc):
            fix = (
                f"Make the module of {target} importable: put the folder holding its .py file on "
                "PYTHONPATH (PYTHONPATH=DIR rnnlab train ...) or pip install it"
            )
        raise ConfigError(
            f"Could not build the {what} from its config ({target}): {type(cause).__name__}: {cause}",
            fix,
        ) from exc


def flatten(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as ``{"optim.lr": 0.001, ...}`` for MLflow params."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, child in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), child)
        else:
            out[prefix] = value

    walk("", OmegaConf.to_container(cfg, resolve=True))
    return out


def format_lr(lr: float) -> str:
    """1e-3 -> '1e-3', 0.0025 -> '2.5e-3', 0.5 -> '0.5'."""
    if 0.01 <= abs(lr) < 1000:
        return f"{lr:g}"
    mantissa, exponent = f"{lr:.3e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def run_name(cfg: DictConfig) -> str:
    return f"{cfg.cell.name}-{cfg.optim.name}-lr{format_lr(float(cfg.optim.lr))}"


def sweep_context() -> tuple[dict[str, str], str | None]:
    """Tags and parent run id for a Hydra multirun job; empty outside one."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {}, None
    hc = HydraConfig.get()
    overrides = " ".join(hc.overrides.task)
    tags = {"overrides": overrides} if overrides else {}
    if hc.mode != RunMode.MULTIRUN:
        return tags, None
    from rnnlab.tracking.sweep import read_parent_run_id

    parent = read_parent_run_id(hc.sweep.dir)
    tags["sweep"] = parent or str(hc.sweep.dir)
    tags["sweep_job"] = str(hc.job.num)
    return tags, parent


@dataclass
class Components:
    """The typed objects a run is made of, built from one composed config."""

    task: Any
    stack: Any
    optimizer: Any
    scheduler: Any
    settings: Any
    device: Any


def build_stack(cell: DictConfig, sizes: tuple[int, ...]) -> Any:
    """The StackSpec from the cell group; built once with one input to check every option."""
    from rnnlab.models.stack import CellContractError, StackSpec

    try:
        stack = StackSpec(
            cell=build(cell.layer, "cell"),
            hidden_sizes=sizes,
            dropout=float(cell.get("dropout", 0.0)),
            name=str(cell.name),
            bidirectional=bool(cell.get("bidirectional", False)),
            locked_dropout=bool(cell.get("locked_dropout", False)),
            zoneout=float(cell.get("zoneout", 0.0)),
            compile=bool(cell.get("compile", False)),
            compile_chunk=int(cell.get("compile_chunk", 8)),
        )
        if not 0.0 <= stack.dropout < 1.0:
            raise ValueError(f"cell.dropout must be in [0, 1), got {stack.dropout}")
        stack.build(input_size=1)
    except ConfigError:
        raise
    except CellContractError as exc:
        raise ConfigError(
            f"The cell does not follow the Cell interface: {exc}",
            "Fix the cell's init_state/forward (see rnnlab/cells/base.py and the README's "
            "user-cell walkthrough)",
        ) from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"Invalid cell options for {cell.layer.get('_target_')}: {type(exc).__name__}: {exc}",
            "Check the cell.* and cell.layer.* values (rnnlab train --cfg job shows them)",
        ) from exc
    return stack


def compose(cfg: DictConfig) -> Components:
    """Turn a composed config into typed objects (no MLflow, no training)."""
    import torch

    from rnnlab.train.device import resolve_device
    from rnnlab.train.settings import TrainerSettings

    device = resolve_device(str(cfg.device))
    try:
        settings = TrainerSettings(**OmegaConf.to_container(cfg.trainer, resolve=True))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Invalid trainer settings: {exc}", "Fix the trainer.* values") from exc
    task = build(cfg.task, "task")
    cell = cfg.cell
    hidden_sizes = cell.get("hidden_sizes") or [cell.hidden_size] * int(cell.num_layers)
    try:
        sizes = tuple(int(h) for h in hidden_sizes)
        if not sizes or min(sizes) <= 0:
            raise ValueError(f"sizes must be positive, got {list(hidden_sizes)}")
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"Invalid cell sizes: {exc}",
            "Set cell.hidden_size and cell.num_layers (or cell.hidden_sizes) to positive integers",
        ) from exc
    stack = build_stack(cell, sizes)
    optimizer = build(cfg.optim, "optimizer")
    try:  # torch validates hyperparameters in the constructor: check before any run exists
        optimizer([torch.nn.Parameter(torch.zeros(1))])
    except Exception as exc:
        raise ConfigError(
            f"Invalid optimizer settings for {cfg.optim.get('_target_')}: {type(exc).__name__}: {exc}",
            "Check the optim.* values (numbers such as optim.lr=1e-3)",
        ) from exc
    scheduler = build(cfg.sched, "scheduler") if cfg.sched.get("_target_") else None
    if scheduler is not None:
        from rnnlab.train.loop import step_scheduler

        try:  # as for the optimizer: bad values fail here, before a run exists
            with warnings.catch_warnings():  # torch warns: a probe steps no optimizer first
                warnings.simplefilter("ignore", UserWarning)
                step_scheduler(scheduler(optimizer([torch.nn.Parameter(torch.zeros(1))])), 1.0)
        except Exception as exc:
            raise ConfigError(
                f"Invalid scheduler settings for {cfg.sched.get('_target_')}: "
                f"{type(exc).__name__}: {exc}",
                "Check the sched.* values",
            ) from exc
    return Components(task, stack, optimizer, scheduler, settings, device)


def resume_checkpoint(run_id: str, uri: str) -> dict[str, Any]:
    """The latest checkpoint of an unfinished run, or a clear error."""
    import tempfile
    from pathlib import Path

    from rnnlab.restore import download_checkpoint
    from rnnlab.tracking.store import connect, get_run
    from rnnlab.train.checkpoint import load_checkpoint

    client = connect(uri)
    run = get_run(client, run_id, uri=uri, asked_as=f"resume={run_id}")
    if run.info.status == "FINISHED":
        raise ConfigError(
            f"resume={run_id}: run {run.info.run_name} already FINISHED",
            "Start a new run instead (drop resume=), e.g. with more trainer.max_epochs",
        )
    with tempfile.TemporaryDirectory(prefix="rnnlab-resume-") as tmp:
        return load_checkpoint(download_checkpoint(client, run_id, "last", Path(tmp)))


def train_from_config(cfg: DictConfig) -> float:
    """Compose typed objects from ``cfg``, run training, print the summary; returns the objective."""
    from rnnlab.tracking.store import RunLogger
    from rnnlab.tracking.uri import resolve_tracking_uri

    started = time.perf_counter()
    uri = resolve_tracking_uri(cfg.tracking.uri)
    resume_id = cfg.get("resume")
    if resume_id:
        checkpoint = resume_checkpoint(str(resume_id), uri)
        run_cfg = OmegaConf.create(checkpoint["config"])
        run_cfg.device = cfg.device  # the machine may differ; everything else is the run's
        parts = compose(run_cfg)
        logger = RunLogger.reopen(
            uri=uri, run_id=str(resume_id), flush_every_s=float(run_cfg.tracking.flush_every_s)
        )
        epoch = checkpoint["progress"]["epoch"]
        print(f"resuming run {logger.run_name} ({resume_id}) at epoch {epoch}", flush=True)
        outcome = run_parts(parts, logger, run_cfg, checkpoint["config"], resume=checkpoint)
        return finish(outcome, logger, uri, started, 0.0, parts.device)

    parts = compose(cfg)
    tags, parent = sweep_context()
    tags.update(
        {"task": str(cfg.task.name), "cell": str(cfg.cell.name), "optim": str(cfg.optim.name)}
    )
    mlflow_start = time.perf_counter()
    logger = RunLogger(
        uri=uri,
        experiment=str(cfg.tracking.experiment or cfg.task.name),
        run_name=run_name(cfg),
        tags=tags,
        parent_run_id=parent,
        flush_every_s=float(cfg.tracking.flush_every_s),
    )
    setup_mlflow = time.perf_counter() - mlflow_start
    logger.log_params(flatten(cfg))
    outcome = run_parts(parts, logger, cfg, OmegaConf.to_yaml(cfg, resolve=True))
    return finish(outcome, logger, uri, started, setup_mlflow, parts.device)


def run_parts(
    parts: Components, logger: Any, cfg: DictConfig, config_yaml: str, resume: Any = None
) -> Any:
    from rnnlab.train.run import train_run

    return train_run(
        task=parts.task,
        stack=parts.stack,
        optimizer=parts.optimizer,
        scheduler=parts.scheduler,
        settings=parts.settings,
        logger=logger,
        device=parts.device,
        seed=int(cfg.seed),
        config_yaml=config_yaml,
        resume=resume,
    )


def finish(outcome: Any, logger: Any, uri: str, started: float, setup: float, device: Any) -> float:
    """Print the end-of-run summary; returns the objective for sweepers."""
    total = time.perf_counter() - started
    in_mlflow = setup + logger.seconds_in_mlflow
    lines = [
        f"run {logger.run_name} finished ({outcome.run_id})",
        *outcome.summary,
        f"time: {total:.1f} s ({in_mlflow:.1f} s in MLflow), device {device}",
        f"browse: rnnlab ui --uri {uri}",
    ]
    print("\n".join(lines), flush=True)
    return outcome.objective


def report_error(exc: RnnlabError) -> None:
    print(f"rnnlab: error: {exc}", file=sys.stderr, flush=True)


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Hydra task function: one job of ``rnnlab train`` (also each job of a multirun).

    Returns the run's best objective (``task.objective``: ``val/loss``, ``val/ppl``), which
    sweepers such as Optuna minimise. A failed single run exits with the error's code. In a
    multirun, a job that diverges is a FAILED MLflow run and returns +inf, so the sweep goes
    on (and Optuna learns to avoid that region); an interrupt stops the sweep; any other
    error fails the job, and the launcher stops the sweep as Hydra does (the parent run is
    closed as FAILED).
    """
    try:
        try:
            return train_from_config(cfg)
        except OSError as exc:
            if exc.errno not in WRITE_ERRORS:
                raise
            raise RnnlabError(
                f"Cannot write {exc.filename or 'a file'}: {exc.strerror}",
                "Free disk space, run from a writable directory, or point tracking.uri / "
                "MLFLOW_TRACKING_URI at a store on another disk",
            ) from exc
    except RnnlabError as exc:
        if debug_enabled():
            raise
        report_error(exc)
        from rnnlab.train.signals import Interrupted

        if in_multirun() and not isinstance(exc, Interrupted):
            if isinstance(exc, DivergenceError):
                return math.inf
            raise
        raise SystemExit(exc.exit_code) from None
