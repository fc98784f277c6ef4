"""The training loop: named steps, no task-specific code, no tracking backend.

:func:`fit` runs epochs until ``trainer.max_epochs``, or until the training-time budget
``trainer.max_time_s`` is spent: then the epoch in progress ends at that step and is the last
(evaluated, checkpointed), so runs compared at equal time all end evaluated; or, with
``trainer.patience``, once the objective has not improved for that many epochs (early
stopping: a function of :class:`Progress` alone, so every rank and a resumed run agree). Each
epoch is four steps, each a method of :class:`Fit`: ``train_epoch`` (every batch: the task's
loss, backward, clip, optimizer step, sampled step metrics, checkpoints every
``checkpoint_every`` steps), ``epoch_metrics`` (training metrics, and the validation splits
when an evaluation is due), ``keep_best`` (the weights with the best ``task.objective``) and
``end_epoch`` (scheduler, checkpoint if due, stop if a signal asked). A non-finite loss stops
training with a :class:`~rnnlab.errors.DivergenceError`.

A step never waits for the device (on CUDA the host queues the next step's kernels while
this one runs): the loss sum, the gradient norm and the divergence check
(:mod:`rnnlab.train.divergence`) stay on the device, and the host reads them, in one copy, only
on sampled steps (``trainer.log_every``: step metrics, the divergence check, the progress line
when due), before a checkpoint and at the end of the epoch. ``tests/test_sync.py`` counts the
reads. With ``trainer.cuda_graphs`` the forward pass replays as CUDA graphs
(:mod:`rnnlab.train.graphs`).

Everything needed to continue bit-exactly lives in a :class:`Progress`, which the
``checkpoint`` callback receives; ``fit(start=...)`` continues from one.

Under data parallelism the same loop runs on every rank (``ranks``, ``trainee``: the DDP
wrapper): each step agrees on the loss scale and on a stop request, epoch sums are taken over
the ranks, and rank 0's evaluation is every rank's (:mod:`rnnlab.train.distributed`).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

from rnnlab.errors import DivergenceError
from rnnlab.tasks.base import Task, progress_enabled
from rnnlab.train.distributed import SOLO, Ranks
from rnnlab.train.divergence import DivergenceWatch
from rnnlab.train.faults import fault_point
from rnnlab.train.graphs import begin_graphed_step, graphed, resolve_cuda_graphs
from rnnlab.train.lines import EpochLines, lines_enabled
from rnnlab.train.precision import autocast, resolve_precision, workload
from rnnlab.train.recorder import Recorder
from rnnlab.train.settings import TrainerSettings
from rnnlab.train.signals import StopRequest


@dataclass
class Progress:
    """Where training stands: enough to continue exactly where it stopped."""

    epoch: int = 1  # the epoch in progress (1-based)
    batches_done: int = 0  # batches of ``epoch`` already trained
    step: int = 0  # optimizer steps so far
    total: torch.Tensor | None = None  # sum of batch loss x weight in this epoch
    weight: int = 0
    seconds: float = 0.0  # training wall time spent in this epoch
    trained_s: float = 0.0  # training wall time of the epochs before it (trainer.max_time_s)
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
    #: the epoch in progress ended early because ``trainer.max_time_s`` was spent
    out_of_time: bool = False
    #: training ended before ``max_epochs``: no better objective for ``trainer.patience`` epochs
    out_of_patience: bool = False


class Stopped(Exception):
    """Raised by ``fit`` after a stop signal, once the checkpoint callback has run."""

    def __init__(self, signum: int, progress: Progress) -> None:
        super().__init__(signum)
        self.signum = signum
        self.progress = progress


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


@dataclass
class Fit:
    """One training run's fixed parts; its methods are the named steps of an epoch."""

    model: nn.Module
    task: Task
    optimizer: torch.optim.Optimizer
    scheduler: Any | None
    settings: TrainerSettings
    recorder: Recorder
    checkpoint: Callable[[Progress], None] | None = None
    #: the module the training forward pass runs through (DDP's wrapper); None: ``model``
    trainee: nn.Module | None = None
    ranks: Ranks = SOLO

    def __post_init__(self) -> None:
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # trainer.precision=auto becomes fp32 or bf16 for the task, model and device
        work = workload(self.task, self.model)
        self.precision, _ = resolve_precision(self.settings.precision, self.task.device, work)
        self.trainee = self.trainee or self.model
        self.stopping: int | None = None  # the stop signal all ranks agreed on, if any
        self.out_of_time = False  # the ranks agreed that trainer.max_time_s is spent
        self.epoch_start = time.perf_counter()
        # plain progress lines: run() sets them up; a caller that drives train_epoch itself
        # (scripts/bench_translate.py) gets none
        self.lines = EpochLines(
            total=self.settings.max_epochs, first=1, interval_s=0, enabled=False
        )
        self.setup_graphs()

    def setup_graphs(self) -> None:
        """``trainer.cuda_graphs`` resolved: with graphs, the forward pass runs compiled
        into CUDA graphs (rnnlab.train.graphs)."""
        self.graphs, _ = resolve_cuda_graphs(
            self.settings.cuda_graphs, self.task.device, fixed_shape=self.task.fixed_shape_steps
        )
        if self.graphs:
            self.trainee = graphed(self.trainee)

    def run(self, p: Progress) -> FitResult:
        """Train from ``p`` until the last epoch; ``p`` is updated in place."""
        if p.best_state is None:
            p.best_state = copy.deepcopy(self.model.state_dict())
        began, budget = time.perf_counter(), self.settings.max_time_s
        self.lines = EpochLines(
            total=self.settings.max_epochs,
            first=p.epoch,
            interval_s=self.settings.log_interval_s,
            enabled=lines_enabled(self.settings.progress),
            budget_s=None if budget is None else budget - p.trained_s - p.seconds,
        )
        with StopRequest() as stop, self.epoch_bar(p) as bar:
            while not (self.finished(p.epoch - 1, p.best_epoch) or self.out_of_time):
                mean_loss, weight = self.train_epoch(p, stop)
                metrics = self.epoch_metrics(p, mean_loss, weight)
                self.keep_best(p, metrics)
                self.lines.epoch(p.epoch, metrics)
                bar.update(1)
                bar.set_postfix(loss=f"{mean_loss:.4g}", refresh=False)
                self.end_epoch(p, stop, objective=metrics.get(self.task.objective))
        epochs = p.epoch - 1  # the last epoch trained, whole or ended by the time budget
        early = self.out_of_patience(epochs, p.best_epoch) and epochs < self.settings.max_epochs
        if early and self.settings.progress is not False:  # false: quiet
            print(self.patience_line(epochs, p.best_epoch), flush=True)
        if p.best_epoch == 0:  # no validation metric: the last weights are the best we know
            p.best_state = copy.deepcopy(self.model.state_dict())
            p.best_epoch = epochs
        return FitResult(
            epochs=epochs,
            steps=p.step,
            final=p.metrics,
            best_epoch=p.best_epoch,
            best_value=p.best_value,
            best_state=p.best_state,
            history=p.history,
            seconds=time.perf_counter() - began,
            out_of_time=self.out_of_time,
            out_of_patience=early,
        )

    def finished(self, done: int, best_epoch: int) -> bool:
        """Whether no epoch follows epoch ``done``: ``max_epochs`` reached, or early stopping."""
        return done >= self.settings.max_epochs or self.out_of_patience(done, best_epoch)

    def out_of_patience(self, done: int, best_epoch: int) -> bool:
        """Whether the objective has not improved in the ``trainer.patience`` epochs since its
        best (epoch ``best_epoch``; 0: never measured, so never stopped for it)."""
        patience = self.settings.patience
        return patience is not None and best_epoch > 0 and done - best_epoch >= patience

    def patience_line(self, done: int, best_epoch: int) -> str:
        """What ending on ``trainer.patience`` says (stdout, with or without bars)."""
        return (
            f"trainer.patience={self.settings.patience}: {self.task.objective} has not improved "
            f"since epoch {best_epoch}; epoch {done} is the last (the best weights are evaluated)"
        )

    def epoch_bar(self, p: Progress):
        from tqdm.auto import tqdm

        return tqdm(
            total=self.settings.max_epochs,
            initial=p.epoch - 1,
            desc=self.task.name,
            unit="epoch",
            disable=not progress_enabled(self.settings.progress),
            dynamic_ncols=True,
            leave=False,
        )

    def save(self, p: Progress) -> None:
        if self.checkpoint is not None:
            self.checkpoint(p)

    def train_epoch(self, p: Progress, stop: StopRequest) -> tuple[float, float]:
        """Train the batches of epoch ``p.epoch`` not yet done; the epoch's mean loss and
        summed batch weight (over every rank). The host reads nothing back from the device
        but on sampled steps, before a checkpoint and here at the end (the one wait)."""
        carry = self.start_epoch(p)
        epoch_start = self.epoch_start
        for index, batch in enumerate(self.task.train_batches(epoch=p.epoch)):
            if index < p.batches_done:
                continue  # resumed mid-epoch: these batches were trained before the stop
            carry = self.train_step(p, batch, carry, stop)
            p.batches_done = index + 1
            every = self.settings.checkpoint_every
            if (every is not None and p.step % every == 0) or self.stopping is not None:
                self.check_divergence(p)  # never checkpoint a diverged run
                p.carry = detach_carry(carry)
                p.seconds = time.perf_counter() - epoch_start
                self.save(p)
                if self.stopping is not None:
                    raise Stopped(self.stopping, p)
            if self.out_of_time:
                if self.settings.progress is not False:  # false: quiet
                    print(self.budget_line(p), flush=True)
                break
        (total,), first_bad = self.watch.read(p.total)  # waits for the epoch's last step
        total, weight = self.ranks.sum(total, p.weight)
        mean_loss = total / max(weight, 1)
        p.seconds = time.perf_counter() - epoch_start
        p.trained_s += p.seconds
        if not math.isfinite(mean_loss):
            raise DivergenceError(epoch=p.epoch, step=min(first_bad, p.step), loss=mean_loss)
        return mean_loss, weight

    def start_epoch(self, p: Progress) -> Any:
        """Ready epoch ``p.epoch`` for :meth:`train_step` (its start, or where a resumed run
        stopped): training mode, the epoch's sums, the divergence watch and the epoch's clock;
        returns the task's carry. A driver of ``train_step`` (a benchmark) calls it first."""
        self.model.train()
        if p.batches_done == 0:
            p.carry = self.task.init_carry(self.model)
            p.total = torch.zeros((), device=self.task.device)
            p.weight, p.seconds = 0, 0.0
        self.watch = DivergenceWatch(p.total, step=p.step)
        self.epoch_start = time.perf_counter() - p.seconds
        return p.carry

    def check_divergence(self, p: Progress) -> None:
        """Fail if a loss of this epoch so far was not finite (reads the device: a wait)."""
        (total,), first_bad = self.watch.read(p.total)
        (total,) = self.ranks.sum(total)  # every rank fails together, none waits alone
        if not math.isfinite(total):
            raise DivergenceError(epoch=p.epoch, step=min(first_bad, p.step), loss=total)

    def train_step(self, p: Progress, batch: Any, carry: Any, stop: StopRequest) -> Any:
        """One optimizer step on ``batch``; returns the task's new carry. Under several
        ranks the step also agrees on the loss scale and on a stop request. Nothing is read
        back from the device unless the step is sampled (``trainer.log_every``)."""
        fault_point("train_step")
        if self.graphs:
            begin_graphed_step()
        with autocast(self.precision, self.task.device):
            loss, carry, batch_weight = self.task.train_loss(self.trainee, batch, carry)
        # the agreed signal, not the live one: a signal landing between here and the check
        # after the step must not stop one rank alone (the others would wait in a collective)
        scale, self.stopping, self.out_of_time = self.ranks.agree(
            batch_weight, stop.signum, summed=self.task.summed_loss, out_of_time=self.spent(p)
        )
        self.optimizer.zero_grad(set_to_none=True)
        (loss * scale if scale != 1.0 else loss).backward()
        clip = self.settings.clip_grad_norm
        sampled = (p.step + 1) % self.settings.log_every == 0
        grad_norm = None
        if clip is not None or sampled:  # on the device: clipping never reads the norm back
            grad_norm = nn.utils.clip_grad_norm_(
                self.params, clip if clip is not None else math.inf
            )
        self.optimizer.step()
        p.step += 1
        loss = loss.detach()
        p.total = p.total + loss * batch_weight
        p.weight += batch_weight
        self.watch.update(p.total, step=p.step)
        if sampled:
            self.log_sampled(p, loss, batch_weight, grad_norm)
        return detach_carry(carry) if self.graphs else carry  # a replay overwrites outputs

    def spent(self, p: Progress) -> bool:
        """Whether this rank's training time reached ``trainer.max_time_s`` (the host's
        clock: no device read)."""
        budget = self.settings.max_time_s
        return budget is not None and p.trained_s + time.perf_counter() - self.epoch_start >= budget

    def budget_line(self, p: Progress) -> str:
        """What ending an epoch early on the time budget says (stdout, with or without bars)."""
        return (
            f"trainer.max_time_s={self.settings.max_time_s:g} spent: epoch {p.epoch} ends "
            f"after {p.batches_done} batches and is the last (evaluated, checkpointed)"
        )

    def log_sampled(self, p: Progress, loss: Any, batch_weight: int, grad_norm: Any) -> None:
        """A sampled step's metrics, the divergence check and, when due, a progress line:
        everything they need read from the device in one copy."""
        (value, norm, own), first_bad = self.watch.read(loss, grad_norm, p.total)
        value_sum, weight_sum, total = self.ranks.sum(value * batch_weight, batch_weight, own)
        if not math.isfinite(total):
            raise DivergenceError(epoch=p.epoch, step=min(first_bad, p.step), loss=total)
        metrics = {"train/step_loss": value_sum / weight_sum, "grad_norm": norm}
        self.recorder.log_metrics(metrics, step=p.step)
        if self.lines.due():  # a long epoch still shows it is alive (checked when sampled)
            batches = p.batches_done + 1  # this step's batch is the next one of the epoch
            self.lines.within(p.epoch, batches=batches, mean_loss=own / max(p.weight, 1))

    def epoch_metrics(self, p: Progress, mean_loss: float, weight: float) -> dict[str, float]:
        """The epoch's metrics (validation too when due), recorded at step ``p.epoch``.
        Rank 0 evaluates and every rank takes its metrics, so all keep the same best weights
        and step their schedulers alike."""
        epoch = p.epoch
        metrics = self.task.train_metrics(mean_loss, weight=weight, seconds=p.seconds)
        last = epoch == self.settings.max_epochs or self.out_of_time
        due = epoch % self.settings.eval_every == 0 or last
        if due and self.ranks.main:
            self.model.eval()
            for split in self.task.eval_splits:
                metrics.update(self.task.evaluate(self.model, split).metrics)
        metrics.update(model_scalars(self.model))
        metrics["lr"] = self.optimizer.param_groups[0]["lr"]
        metrics = self.ranks.from_main(metrics)
        self.recorder.log_metrics(metrics, step=epoch)
        for key, value in metrics.items():
            p.history.setdefault(key, []).append((epoch, value))
        p.metrics = metrics
        return metrics

    def keep_best(self, p: Progress, metrics: dict[str, float]) -> None:
        """Keep a copy of the weights when the objective improved."""
        objective = metrics.get(self.task.objective)
        if objective is not None and math.isfinite(objective) and objective < p.best_value:
            p.best_value, p.best_epoch = objective, p.epoch
            p.best_state = copy.deepcopy(self.model.state_dict())

    def end_epoch(self, p: Progress, stop: StopRequest, *, objective: float | None) -> None:
        """Step the scheduler, move to the next epoch, checkpoint if due, stop if asked."""
        if self.scheduler is not None:
            step_scheduler(self.scheduler, objective)
        epoch = p.epoch
        p.epoch, p.batches_done, p.carry, p.total = epoch + 1, 0, None, None
        last = self.finished(epoch, p.best_epoch) or self.out_of_time
        _, self.stopping, _ = self.ranks.agree(0, stop.signum, summed=True)
        if last or epoch % self.settings.checkpoint_every_epochs == 0 or self.stopping is not None:
            self.save(p)
        if self.stopping is not None and not last:
            raise Stopped(self.stopping, p)


def fit(
    *,
    model: nn.Module,
    task: Task,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None,
    settings: TrainerSettings,
    recorder: Recorder,
    start: Progress | None = None,
    checkpoint: Callable[[Progress], None] | None = None,
    trainee: nn.Module | None = None,
    ranks: Ranks = SOLO,
) -> FitResult:
    """Train ``model`` on ``task``; metrics go to ``recorder`` (per epoch, sampled steps).
    ``trainee`` is what the forward pass runs through (a DDP wrapper of ``model``)."""
    loop = Fit(model, task, optimizer, scheduler, settings, recorder, checkpoint, trainee, ranks)
    return loop.run(start or Progress())
