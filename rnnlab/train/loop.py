"""The training loop: plain functions, no task-specific code.

``fit`` runs epochs of ``task.train_batches``, back-propagates ``task.train_loss``, clips,
steps the optimizer and scheduler, evaluates the task's validation splits, keeps the best
weights by the task's objective, and stops at the first non-finite loss.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

from rnnlab.errors import DivergenceError
from rnnlab.tasks.base import Task
from rnnlab.train.settings import TrainerSettings


class MetricSink(Protocol):
    def log_metrics(self, metrics: dict[str, float], *, step: int) -> None: ...


@dataclass
class FitResult:
    """What a finished ``fit`` hands back."""

    epochs: int
    steps: int
    final: dict[str, float]
    best_epoch: int
    best_value: float
    best_state: dict[str, Any]
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    seconds: float = 0.0


def progress_enabled(setting: bool | None) -> bool:
    return sys.stderr.isatty() if setting is None else setting


def model_scalars(model: nn.Module) -> dict[str, float]:
    scalars = getattr(model, "scalars", None)
    return scalars() if callable(scalars) else {}


def fit(
    *,
    model: nn.Module,
    task: Task,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None,
    settings: TrainerSettings,
    sink: MetricSink,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> FitResult:
    """Train ``model`` on ``task``; metrics go to ``sink`` (per epoch, plus sampled steps)."""
    from tqdm.auto import tqdm

    params = [p for p in model.parameters() if p.requires_grad]
    clip = settings.clip_grad_norm
    history: dict[str, list[tuple[int, float]]] = {}
    best_value, best_epoch, best_state = math.inf, 0, copy.deepcopy(model.state_dict())
    step = 0
    metrics: dict[str, float] = {}
    start = time.perf_counter()
    bar = tqdm(
        range(1, settings.max_epochs + 1),
        desc=f"{task.name}",
        unit="epoch",
        disable=not progress_enabled(settings.progress),
        dynamic_ncols=True,
        leave=False,
    )
    for epoch in bar:
        model.train()
        epoch_start = time.perf_counter()
        carry = task.init_carry(model)
        total = torch.zeros((), device=task.device)
        weight = 0
        for batch in task.train_batches(epoch=epoch):
            loss, carry, batch_weight = task.train_loss(model, batch, carry)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            sampled = (step + 1) % settings.log_every == 0
            grad_norm = None
            if clip is not None or sampled:
                grad_norm = nn.utils.clip_grad_norm_(params, clip if clip is not None else math.inf)
            optimizer.step()
            step += 1
            total += loss.detach() * batch_weight
            weight += batch_weight
            if sampled:
                value = loss.item()
                if not math.isfinite(value):
                    raise DivergenceError(epoch=epoch, step=step, loss=value)
                sink.log_metrics(
                    {"train/step_loss": value, "grad_norm": float(grad_norm)}, step=step
                )
        mean_loss = (total / max(weight, 1)).item()  # syncs the device: the epoch is done
        train_seconds = time.perf_counter() - epoch_start
        if not math.isfinite(mean_loss):
            raise DivergenceError(epoch=epoch, step=step, loss=mean_loss)
        metrics = task.train_metrics(mean_loss, weight=weight, seconds=train_seconds)
        if epoch % settings.eval_every == 0 or epoch == settings.max_epochs:
            model.eval()
            for split in task.eval_splits:
                metrics.update(task.evaluate(model, split))
        metrics.update(model_scalars(model))
        metrics["lr"] = optimizer.param_groups[0]["lr"]
        sink.log_metrics(metrics, step=epoch)
        for key, value in metrics.items():
            history.setdefault(key, []).append((epoch, value))
        objective = metrics.get(task.objective)
        if objective is not None and math.isfinite(objective) and objective < best_value:
            best_value, best_epoch = objective, epoch
            best_state = copy.deepcopy(model.state_dict())
        if scheduler is not None:
            if isinstance(scheduler, ReduceLROnPlateau):
                if objective is not None:
                    scheduler.step(objective)
            else:
                scheduler.step()
        bar.set_postfix(loss=f"{mean_loss:.4g}", refresh=False)
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics)
    bar.close()
    if best_epoch == 0:  # no validation metric: the last weights are the best we know
        best_state, best_epoch = copy.deepcopy(model.state_dict()), settings.max_epochs
    return FitResult(
        epochs=settings.max_epochs,
        steps=step,
        final=metrics,
        best_epoch=best_epoch,
        best_value=best_value,
        best_state=best_state,
        history=history,
        seconds=time.perf_counter() - start,
    )
