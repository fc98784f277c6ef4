"""The training loop: plain functions, no task-specific code.

``fit`` runs epochs of ``task.train_batches``, back-propagates ``task.train_loss``, clips,
steps the optimizer and scheduler, evaluates the task's validation splits, keeps the best
weights by the task's objective, and stops at the first non-finite loss. Everything needed to
continue bit-exactly lives in a :class:`Progress`, which ``checkpoint`` receives every
``checkpoint_every`` steps, at epoch ends, and on a stop signal; ``fit(start=...)`` resumes it.
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
from rnnlab.train.precision import autocast
from rnnlab.train.settings import TrainerSettings
from rnnlab.train.signals import StopRequest


class MetricSink(Protocol):
    def log_metrics(self, metrics: dict[str, float], *, step: int) -> None: ...


@dataclass
class Progress:
    """Where training stands: enough to continue exactly where it stopped."""

    epoch: int = 1  # the epoch in progress (1-based)
    batches_done: int = 0  # batches of ``epoch`` already trained
    step: int = 0  # optimizer steps so far
    total: torch.Tensor | None = None  # sum of batch loss x weight in this epoch
    weight: int = 0
    seconds: float = 0.0  # training wall time spent in this epoch
    carry: Any = None  # the task's carry (e.g. a TBPTT hidden state) mid-epoch
    best_value: float = math.inf
    best_epoch: int = 0
    best_state: dict[str, Any] | None = None
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # last epoch's metrics

    def state_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Progress:
        return cls(**state)


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


class Stopped(Exception):
    """Raised by ``fit`` after a stop signal, once the checkpoint callback has run."""

    def __init__(self, signum: int, progress: Progress) -> None:
        super().__init__(signum)
        self.signum = signum
        self.progress = progress


def progress_enabled(setting: bool | None) -> bool:
    return sys.stderr.isatty() if setting is None else setting


def model_scalars(model: nn.Module) -> dict[str, float]:
    scalars = getattr(model, "scalars", None)
    return scalars() if callable(scalars) else {}


def detach_carry(carry: Any) -> Any:
    """A copy of the carry without autograd history (tensors, tuples and lists of them)."""
    if isinstance(carry, torch.Tensor):
        return carry.detach().clone()
    if isinstance(carry, list | tuple):
        return type(carry)(detach_carry(c) for c in carry)
    return carry


def step_scheduler(scheduler: Any, objective: float | None) -> None:
    """Epoch-end scheduler step; plateau schedulers get the task's objective."""
    if isinstance(scheduler, ReduceLROnPlateau):
        if objective is not None:
            scheduler.step(objective)
    else:
        scheduler.step()


def fit(
    *,
    model: nn.Module,
    task: Task,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None,
    settings: TrainerSettings,
    sink: MetricSink,
    start: Progress | None = None,
    checkpoint: Callable[[Progress], None] | None = None,
) -> FitResult:
    """Train ``model`` on ``task``; metrics go to ``sink`` (per epoch, plus sampled steps)."""
    from tqdm.auto import tqdm

    params = [p for p in model.parameters() if p.requires_grad]
    clip = settings.clip_grad_norm
    p = start or Progress()
    if p.best_state is None:
        p.best_state = copy.deepcopy(model.state_dict())
    began = time.perf_counter()
    bar = tqdm(
        total=settings.max_epochs,
        initial=p.epoch - 1,
        desc=task.name,
        unit="epoch",
        disable=not progress_enabled(settings.progress),
        dynamic_ncols=True,
        leave=False,
    )

    def save() -> None:
        if checkpoint is not None:
            checkpoint(p)

    with StopRequest() as stop:
        while p.epoch <= settings.max_epochs:
            epoch = p.epoch
            model.train()
            if p.batches_done == 0:
                p.carry = task.init_carry(model)
                p.total = torch.zeros((), device=task.device)
                p.weight, p.seconds = 0, 0.0
            epoch_start = time.perf_counter() - p.seconds
            carry = p.carry
            for index, batch in enumerate(task.train_batches(epoch=epoch)):
                if index < p.batches_done:
                    continue  # resumed mid-epoch: these batches were trained before the stop
                with autocast(settings.precision, task.device):
                    loss, carry, batch_weight = task.train_loss(model, batch, carry)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                sampled = (p.step + 1) % settings.log_every == 0
                grad_norm = None
                if clip is not None or sampled:
                    grad_norm = nn.utils.clip_grad_norm_(
                        params, clip if clip is not None else math.inf
                    )
                optimizer.step()
                p.step += 1
                p.batches_done = index + 1
                p.total = p.total + loss.detach() * batch_weight
                p.weight += batch_weight
                if sampled:
                    value = loss.item()
                    if not math.isfinite(value):
                        raise DivergenceError(epoch=epoch, step=p.step, loss=value)
                    sink.log_metrics(
                        {"train/step_loss": value, "grad_norm": float(grad_norm)}, step=p.step
                    )
                checkpoint_due = (
                    settings.checkpoint_every is not None
                    and p.step % settings.checkpoint_every == 0
                )
                if checkpoint_due or stop.signum is not None:
                    p.carry = detach_carry(carry)
                    p.seconds = time.perf_counter() - epoch_start
                    save()
                    if stop.signum is not None:
                        raise Stopped(stop.signum, p)
            mean_loss = (p.total / max(p.weight, 1)).item()  # syncs the device: epoch done
            p.seconds = time.perf_counter() - epoch_start
            if not math.isfinite(mean_loss):
                raise DivergenceError(epoch=epoch, step=p.step, loss=mean_loss)
            metrics = task.train_metrics(mean_loss, weight=p.weight, seconds=p.seconds)
            if epoch % settings.eval_every == 0 or epoch == settings.max_epochs:
                model.eval()
                for split in task.eval_splits:
                    metrics.update(task.evaluate(model, split))
            metrics.update(model_scalars(model))
            metrics["lr"] = optimizer.param_groups[0]["lr"]
            sink.log_metrics(metrics, step=epoch)
            for key, value in metrics.items():
                p.history.setdefault(key, []).append((epoch, value))
            p.metrics = metrics
            objective = metrics.get(task.objective)
            if objective is not None and math.isfinite(objective) and objective < p.best_value:
                p.best_value, p.best_epoch = objective, epoch
                p.best_state = copy.deepcopy(model.state_dict())
            if scheduler is not None:
                step_scheduler(scheduler, objective)
            bar.update(1)
            bar.set_postfix(loss=f"{mean_loss:.4g}", refresh=False)
            p.epoch, p.batches_done, p.carry, p.total = epoch + 1, 0, None, None
            last = epoch == settings.max_epochs
            if last or epoch % settings.checkpoint_every_epochs == 0 or stop.signum is not None:
                save()
            if stop.signum is not None and not last:
                raise Stopped(stop.signum, p)
    bar.close()
    if p.best_epoch == 0:  # no validation metric: the last weights are the best we know
        p.best_state, p.best_epoch = copy.deepcopy(model.state_dict()), settings.max_epochs
    return FitResult(
        epochs=settings.max_epochs,
        steps=p.step,
        final=p.metrics,
        best_epoch=p.best_epoch,
        best_value=p.best_value,
        best_state=p.best_state,
        history=p.history,
        seconds=time.perf_counter() - began,
    )
