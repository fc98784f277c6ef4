"""One tracked training run: build, fit (or resume), evaluate the best weights, log artifacts.

Everything here takes typed objects; :mod:`rnnlab.app` turns the Hydra config into them.
The resumable checkpoint ``checkpoints/last.pt`` is written atomically straight into a local
artifact store (temp file + rename), or uploaded after an atomic local write otherwise.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rnnlab.models.stack import RecurrentStack, StackSpec
from rnnlab.tasks.base import Task
from rnnlab.tracking.store import RunLogger
from rnnlab.train import rng
from rnnlab.train.allocator import tune_malloc
from rnnlab.train.checkpoint import save_checkpoint
from rnnlab.train.device import seed_everything
from rnnlab.train.loop import Progress, Stopped, fit, model_scalars
from rnnlab.train.precision import precision_warning
from rnnlab.train.settings import TrainerSettings
from rnnlab.train.signals import Interrupted

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


@dataclass
class RunOutcome:
    """The numbers a finished run reports."""

    run_id: str
    metrics: dict[str, float]
    objective: float
    summary: list[str] = field(default_factory=list)
    seconds: float = 0.0


def rnn_path(model: torch.nn.Module) -> str:
    """Which recurrent path the model runs (``fused``, ``stepwise`` or ``compiled``)."""
    paths = {m.path for m in model.modules() if isinstance(m, RecurrentStack)}
    return paths.pop() if len(paths) == 1 else ("mixed" if paths else "none")


def set_deterministic(enabled: bool) -> None:
    """torch's deterministic-algorithms switch plus the cuDNN/cuBLAS settings it needs."""
    if not enabled:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def checkpoint_writer(
    *, logger: RunLogger, model: torch.nn.Module, optimizer: Any, scheduler: Any, common: dict
) -> Callable[[Progress], None]:
    """A callback that saves everything needed to resume as ``checkpoints/last.pt``."""
    local = logger.local_artifact_dir()

    def write(progress: Progress) -> None:
        logger.flush()  # the store holds every metric up to the checkpoint: resume loses none
        payload = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "progress": progress.state_dict(),
            "rng": rng.capture(),
            **common,
        }
        if local is not None:
            save_checkpoint(local / "checkpoints" / "last.pt", **payload)
            return
        with tempfile.TemporaryDirectory(prefix="rnnlab-ckpt-") as tmp:
            logger.log_artifact(save_checkpoint(Path(tmp) / "last.pt", **payload), "checkpoints")

    return write


def train_run(
    *,
    task: Task,
    stack: StackSpec,
    optimizer: OptimizerFactory,
    scheduler: SchedulerFactory | None,
    settings: TrainerSettings,
    logger: RunLogger,
    device: torch.device,
    seed: int,
    config_yaml: str,
    resume: dict[str, Any] | None = None,
) -> RunOutcome:
    """Train (or resume) and evaluate; on failure the run is marked failed, metrics kept."""
    start = time.perf_counter()
    tune_malloc()  # process-wide: freed activations stay in the heap (rnnlab.train.allocator)
    try:
        set_deterministic(settings.deterministic)
        seed_everything(seed)
        task.to(device)
        model = task.build_model(stack=stack).to(device)
        opt = optimizer(model.parameters())
        sched = scheduler(opt) if scheduler is not None else None
        progress = None
        if resume is not None:
            model.load_state_dict(resume["model"])
            opt.load_state_dict(resume["optimizer"])
            if sched is not None and resume.get("scheduler") is not None:
                sched.load_state_dict(resume["scheduler"])
            progress = Progress.from_state_dict(resume["progress"])
            rng.restore(resume["rng"])
        path = rnn_path(model)
        logger.set_tags({"rnn_path": path, "device": str(device), "precision": settings.precision})
        print(f"rnn path: {path}, training precision: {settings.precision}", flush=True)
        warning = precision_warning(settings.precision, device)
        if warning is not None:
            print(warning, file=sys.stderr, flush=True)
        common = {"config": config_yaml, "task_state": task.state_dict(), "seed": seed}
        save_last = checkpoint_writer(
            logger=logger, model=model, optimizer=opt, scheduler=sched, common=common
        )
        try:
            result = fit(
                model=model,
                task=task,
                optimizer=opt,
                scheduler=sched,
                settings=settings,
                sink=logger,
                start=progress,
                checkpoint=save_last,
            )
        except Stopped as stop:
            logger.fail(f"stopped by signal {stop.signum}; resumable", status="KILLED")
            raise Interrupted(
                signum=stop.signum,
                run_id=logger.run_id,
                epoch=stop.progress.epoch,
                step=stop.progress.step,
            ) from None
        summary = [f"final train loss: {result.final.get('train/loss', float('nan')):.6g}"]
        summary += task.summary(model)
        model.load_state_dict(result.best_state)
        model.eval()
        final: dict[str, float] = {}
        for split in task.final_splits:
            final.update(task.evaluate(model, split))
        logger.log_metrics(final, step=result.epochs)
        if task_tags := task.tags():
            logger.set_tags(task_tags)
        with tempfile.TemporaryDirectory(prefix="rnnlab-") as tmp:
            out = Path(tmp)
            (out / "config.yaml").write_text(config_yaml)
            save_checkpoint(
                out / "checkpoints" / "best.pt",
                model=result.best_state,
                epoch=result.best_epoch,
                **common,
            )
            from rnnlab.analysis.plots import plot_curves

            curves = {k: v for k, v in result.history.items() if k.endswith("/loss")}
            plot_curves(curves, out / "plots" / "loss_curve.png", title=logger.run_name)
            extra = task.write_artifacts(model, out / "samples")
            logger.log_artifact(out / "config.yaml")
            logger.log_artifact(out / "checkpoints" / "best.pt", "checkpoints")
            logger.log_artifact(out / "plots" / "loss_curve.png", "plots")
            for path in extra:
                logger.log_artifact(path, "samples")
        for split in task.final_splits:
            summary += [f"{k}: {v:.6g}" for k, v in final.items() if k.startswith(f"{split}/")]
        logger.end("FINISHED")
    except Interrupted:
        raise
    except KeyboardInterrupt:
        logger.fail("interrupted by the user (Ctrl-C)", status="KILLED")
        raise
    except BaseException as exc:
        logger.fail(f"{type(exc).__name__}: {exc}")
        raise
    metrics = {**result.final, **final, **model_scalars(model)}
    return RunOutcome(
        run_id=logger.run_id,
        metrics=metrics,
        objective=result.best_value,
        summary=summary,
        seconds=time.perf_counter() - start,
    )
