"""Train one model from typed parts: build, fit (or resume), evaluate the best weights.

Everything here takes typed objects (:mod:`rnnlab.compose` makes them from a config) and
writes through a :class:`~rnnlab.train.recorder.Recorder`: metrics, tags, and the two
checkpoints, ``last`` (resumable, every time the loop asks) and ``best`` (the weights that
scored best on the task's objective, at the end). Ending the run, artifacts and plots are
the session's business (:mod:`rnnlab.session`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from rnnlab.models.stack import RecurrentStack, StackSpec
from rnnlab.tasks.base import EvalResult, Task
from rnnlab.train import rng
from rnnlab.train.allocator import tune_malloc
from rnnlab.train.checkpoint import save_checkpoint
from rnnlab.train.device import seed_everything
from rnnlab.train.distributed import SOLO, Ranks, check_world_size, to_device
from rnnlab.train.faults import fault_point
from rnnlab.train.graphs import resolve_cuda_graphs
from rnnlab.train.loop import FitResult, Progress, fit, model_scalars
from rnnlab.train.memory import out_of_memory_explained
from rnnlab.train.optim import make_optimizer
from rnnlab.train.precision import Workload, precision_warnings, resolve_precision, workload
from rnnlab.train.recorder import Recorder
from rnnlab.train.settings import TrainerSettings
from rnnlab.train.threads import apply_threads

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


@dataclass
class TrainOutcome:
    """A trained model (best weights loaded, eval mode) and what its training found."""

    model: torch.nn.Module
    fit: FitResult
    #: the final evaluation of the best weights, split -> result
    results: dict[str, EvalResult]
    metrics: dict[str, float] = field(default_factory=dict)
    summary: list[str] = field(default_factory=list)


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
    *,
    recorder: Recorder,
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    common: dict,
    ranks: Ranks = SOLO,
) -> Callable[[Progress], None]:
    """A callback that saves everything needed to resume as checkpoint ``last``. Every rank
    calls it; rank 0 writes it, with each rank's own state (``ranks``: carry, partial epoch
    loss, RNG streams) gathered from all of them."""

    def write(progress: Progress) -> None:
        own = {"carry": progress.carry, "total": progress.total, "weight": progress.weight}
        states = ranks.gather({**own, "rng": rng.capture()})
        if not ranks.main:
            return
        payload = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "progress": progress.state_dict(),
            "rng": states[0]["rng"],
            "world_size": ranks.world_size,
            "ranks": states,
            **common,
        }
        recorder.write_checkpoint("last", lambda path: save_checkpoint(path, **payload))

    return write


def restore(
    model: Any, optimizer: Any, scheduler: Any, resume: dict[str, Any], ranks: Ranks = SOLO
) -> Progress:
    """Load a ``last`` checkpoint's state into the fresh objects; where training stood (this
    rank's own carry, partial epoch loss and RNG streams included)."""
    check_world_size(resume, ranks.world_size, run_id="the checkpoint")
    model.load_state_dict(resume["model"])
    optimizer.load_state_dict(resume["optimizer"])
    if scheduler is not None and resume.get("scheduler") is not None:
        scheduler.load_state_dict(resume["scheduler"])
    progress = Progress.from_state_dict(resume["progress"])
    own = resume.get("ranks", [None])[ranks.rank]
    if own is None:  # a checkpoint from before data parallelism: one rank, all in progress
        rng.restore(resume["rng"])
        return progress
    rng.restore(own["rng"])
    device = next(model.parameters()).device
    progress.carry, progress.weight = to_device(own["carry"], device), own["weight"]
    progress.total = to_device(own["total"], device)
    return progress


@contextlib.contextmanager
def machine_settings(
    settings: TrainerSettings,
    *,
    device: torch.device,
    concurrent_jobs: int,
    recorder: Recorder,
    work: Workload,
    fixed_shape: bool = False,
) -> Iterator[TrainerSettings]:
    """Resolve ``auto`` precision (for this machine and ``work``: the task and its step's
    size), threads and CUDA graphs, tag and print the choices; yields the settings with them
    resolved. The thread count is restored after, as the process may go on (tests, notebooks)."""
    before = torch.get_num_threads()
    threads, threads_reason = apply_threads(settings.threads, concurrent_jobs=concurrent_jobs)
    precision, precision_reason = resolve_precision(settings.precision, device, work)
    graphs, graphs_reason = resolve_cuda_graphs(
        settings.cuda_graphs, device, fixed_shape=fixed_shape
    )
    recorder.set_tags(
        {
            "precision": precision,
            "precision_reason": precision_reason,
            "threads": str(threads),
            "threads_reason": threads_reason,
            "cuda_graphs": "on" if graphs else "off",
            "cuda_graphs_reason": graphs_reason,
        }
    )
    print(f"training precision: {precision} ({precision_reason})", flush=True)
    print(f"threads: {threads} ({threads_reason})", flush=True)
    if device.type == "cuda":
        print(f"cuda graphs: {'on' if graphs else 'off'} ({graphs_reason})", flush=True)
    for warning in precision_warnings(precision, device, work):
        print(warning, file=sys.stderr, flush=True)
    try:
        yield replace(
            settings,
            precision=precision,
            threads=str(threads),
            cuda_graphs="on" if graphs else "off",
        )
    finally:
        torch.set_num_threads(before)


def place_task(
    task: Task, *, device: torch.device, ranks: Ranks, resume: dict[str, Any] | None
) -> torch.device:
    """Put ``task`` on this rank's device and shard; a resumed run gets the vocabularies /
    subword models its weights were trained with. Returns the device."""
    device = ranks.place(device)
    task.shard(rank=ranks.rank, world_size=ranks.world_size).to(device)
    if resume is not None:
        task.load_state_dict(resume.get("task_state") or {})
    return device


def announce_path(
    model: torch.nn.Module, *, recorder: Recorder, device: torch.device, optimizer: str
) -> None:
    """Tag and print which recurrent path (fused, stepwise, compiled, parallel) the model
    runs and how many parameters it trains (cells are compared at equal counts); tag which
    optimizer implementation (rnnlab.train.optim) steps it."""
    path = rnn_path(model)
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    tags = {"rnn_path": path, "device": str(device), "optimizer_impl": optimizer}
    recorder.set_tags({**tags, "parameters": str(count)})
    print(f"rnn path: {path}; {count:,} parameters", flush=True)


def machine_for(
    task: Task,
    model: torch.nn.Module,
    settings: TrainerSettings,
    *,
    device: torch.device,
    concurrent_jobs: int,
    recorder: Recorder,
):
    """The machine settings (threads, precision, compile, graphs) this task and model train
    under: auto precision reads the task's tolerance and the model's size (its workload)."""
    return machine_settings(
        settings,
        device=device,
        concurrent_jobs=concurrent_jobs,
        recorder=recorder,
        work=workload(task, model),
        fixed_shape=task.fixed_shape_steps,
    )


def train_model(
    *,
    task: Task,
    stack: StackSpec,
    optimizer: OptimizerFactory,
    scheduler: SchedulerFactory | None,
    settings: TrainerSettings,
    recorder: Recorder,
    device: torch.device,
    seed: int,
    config_yaml: str,
    resume: dict[str, Any] | None = None,
    concurrent_jobs: int = 1,
    ranks: Ranks = SOLO,
) -> TrainOutcome | None:
    """Train (or resume), then evaluate the best weights on the task's final splits.

    ``concurrent_jobs``: training processes the launcher runs at once beside this one (the
    thread policy's share). Under several ``ranks`` (a process group already joined) each
    trains on its shard of the data through DistributedDataParallel, and rank 0 alone
    evaluates: the others return None. Raises :class:`~rnnlab.train.loop.Stopped` after a
    stop signal (a checkpoint is saved).
    """
    tune_malloc()  # process-wide: freed activations stay in the heap (rnnlab.train.allocator)
    set_deterministic(settings.deterministic)
    seed_everything(seed)
    device = place_task(task, device=device, ranks=ranks, resume=resume)
    model = task.build_model(stack=stack).to(device)
    trainee = ranks.wrap(model)  # DDP broadcasts rank 0's weights: all ranks start alike
    if ranks.rank > 0:
        seed_everything(seed + ranks.rank)  # each rank its own dropout masks
    opt, opt_impl = make_optimizer(optimizer, model.parameters(), device)
    sched = scheduler(opt) if scheduler is not None else None
    start = restore(model, opt, sched, resume, ranks) if resume is not None else None
    if ranks.main:
        announce_path(model, recorder=recorder, device=device, optimizer=opt_impl)
        recorder.set_tags(task.tags())
    common = {"config": config_yaml, "task_state": task.state_dict(), "seed": seed}
    save_last = checkpoint_writer(
        recorder=recorder, model=model, optimizer=opt, scheduler=sched, common=common, ranks=ranks
    )
    machine = machine_for(
        task, model, settings, device=device, concurrent_jobs=concurrent_jobs, recorder=recorder
    )
    with machine as resolved, out_of_memory_explained(device):
        result = fit(
            model=model,
            task=task,
            optimizer=opt,
            scheduler=sched,
            settings=resolved,
            recorder=recorder,
            start=start,
            checkpoint=save_last,
            trainee=trainee,
            ranks=ranks,
        )
        if not ranks.main:
            return None
        return evaluate_best(task, model, result, recorder=recorder, common=common)


def evaluate_best(
    task: Task, model: torch.nn.Module, result: FitResult, *, recorder: Recorder, common: dict
) -> TrainOutcome:
    """Load the best weights, evaluate the final splits, record them and checkpoint ``best``."""
    summary = [f"final train loss: {result.final.get('train/loss', float('nan')):.6g}"]
    if result.out_of_time:  # ended by trainer.max_time_s, not after max_epochs
        recorder.set_tags({"stopped_by": "max_time_s", "epochs_trained": str(result.epochs)})
        summary.append(f"stopped by trainer.max_time_s in epoch {result.epochs}")
    if result.out_of_patience:  # early stopping: no better objective for trainer.patience epochs
        recorder.set_tags({"stopped_by": "patience", "epochs_trained": str(result.epochs)})
        summary.append(
            f"stopped early after epoch {result.epochs} (trainer.patience): best "
            f"{task.objective} {result.best_value:.6g} at epoch {result.best_epoch}"
        )
    summary += task.summary(model)
    fault_point("final_evaluation")
    model.load_state_dict(result.best_state)
    model.eval()
    results = {split: task.evaluate(model, split) for split in task.final_splits}
    final = {k: v for r in results.values() for k, v in r.metrics.items()}
    recorder.log_metrics(final, step=result.epochs)
    tags = {k: v for r in results.values() for k, v in r.tags.items()}
    if tags:
        recorder.set_tags(tags)
    best = {"model": result.best_state, "epoch": result.best_epoch, **common}
    recorder.write_checkpoint("best", lambda path: save_checkpoint(path, **best))
    summary += [f"{k}: {v:.6g}" for k, v in final.items()]
    for warning in task.result_warnings(results):
        print(f"warning: {warning}", file=sys.stderr, flush=True)
        summary.append(f"warning: {warning}")
    metrics = {**result.final, **final, **model_scalars(model)}
    return TrainOutcome(model=model, fit=result, results=results, metrics=metrics, summary=summary)
