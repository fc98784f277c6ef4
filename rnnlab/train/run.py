"""One tracked training run: build, fit, evaluate the best weights, log artifacts.

Everything here takes typed objects; :mod:`rnnlab.app` turns the Hydra config into them.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rnnlab.errors import DivergenceError
from rnnlab.models.stack import RecurrentStack, StackSpec
from rnnlab.tasks.base import Task
from rnnlab.tracking.store import RunLogger
from rnnlab.train.checkpoint import save_checkpoint
from rnnlab.train.device import seed_everything
from rnnlab.train.loop import fit, model_scalars
from rnnlab.train.settings import TrainerSettings

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
) -> RunOutcome:
    """Train and evaluate; on any failure the MLflow run is marked failed, metrics kept."""
    start = time.perf_counter()
    try:
        seed_everything(seed)
        task.to(device)
        model = task.build_model(stack=stack).to(device)
        opt = optimizer(model.parameters())
        sched = scheduler(opt) if scheduler is not None else None
        path = rnn_path(model)
        logger.set_tags({"rnn_path": path, "device": str(device)})
        print(f"rnn path: {path}", flush=True)
        result = fit(
            model=model, task=task, optimizer=opt, scheduler=sched, settings=settings, sink=logger
        )
        summary = [f"final train loss: {result.final.get('train/loss', float('nan')):.6g}"]
        summary += task.summary(model)
        last_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(result.best_state)
        model.eval()
        final: dict[str, float] = {}
        for split in task.final_splits:
            final.update(task.evaluate(model, split))
        logger.log_metrics(final, step=result.epochs)
        with tempfile.TemporaryDirectory(prefix="rnnlab-") as tmp:
            out = Path(tmp)
            (out / "config.yaml").write_text(config_yaml)
            common = {"config": config_yaml, "task_state": task.state_dict(), "seed": seed}
            save_checkpoint(
                out / "checkpoints" / "last.pt",
                model=last_state,
                optimizer=opt.state_dict(),
                epoch=result.epochs,
                step=result.steps,
                **common,
            )
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
            logger.log_artifact(out / "checkpoints" / "last.pt", "checkpoints")
            logger.log_artifact(out / "checkpoints" / "best.pt", "checkpoints")
            logger.log_artifact(out / "plots" / "loss_curve.png", "plots")
            for path in extra:
                logger.log_artifact(path, "samples")
        for split in task.final_splits:
            summary += [f"{k}: {v:.6g}" for k, v in final.items() if k.startswith(f"{split}/")]
        logger.end("FINISHED")
    except DivergenceError as exc:
        logger.fail(str(exc))
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
