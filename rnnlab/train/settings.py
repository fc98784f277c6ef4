"""Typed trainer settings: the ``trainer`` config group (defaults in ``conf/trainer/default.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rnnlab.options import POSITIVE, Options, Rule, one_of, option
from rnnlab.train.graphs import CUDA_GRAPHS
from rnnlab.train.precision import PRECISIONS
from rnnlab.train.threads import valid_threads


@dataclass(frozen=True)
class TrainerSettings(Options):
    """Keys every task honours."""

    section: ClassVar[str] = "trainer"

    max_epochs: int = option(POSITIVE)
    #: a training-time budget in seconds (None: none): the epoch in progress ends at the
    #: step that spends it, is evaluated, and the run finishes (compares models at equal time)
    max_time_s: float | None = option(POSITIVE)
    #: early stopping: the run ends once the task's objective (val/loss, val/ppl) has not
    #: improved for this many epochs (None: never); the best weights are evaluated as usual
    patience: int | None = option(POSITIVE)
    #: clip the global gradient norm to this value; None disables clipping
    clip_grad_norm: float | None = option(POSITIVE)
    #: log the sampled per-step metrics (train/step_loss, grad_norm) every N optimizer steps
    log_every: int = option(POSITIVE)
    #: evaluate the validation split every N epochs (and always after the last one)
    eval_every: int = option(POSITIVE)
    #: progress bars: None = bars on a terminal, plain lines per epoch otherwise; False: quiet
    progress: bool | None = option()
    #: off a terminal, a progress line at least this often within a long epoch (seconds)
    log_interval_s: float = option(POSITIVE)
    #: save a resumable checkpoint every N optimizer steps (None: only at epoch ends)
    checkpoint_every: int | None = option(POSITIVE)
    #: ... and at the end of every N-th epoch (and always after the last one)
    checkpoint_every_epochs: int = option(POSITIVE)
    #: make CUDA kernels deterministic (torch.use_deterministic_algorithms); slower on GPU
    deterministic: bool = option()
    #: ``auto`` (bf16 where it is faster: rnnlab.train.precision), ``fp32``, or ``bf16``
    #: mixed precision for the training forward pass
    precision: str = option(one_of(*PRECISIONS))
    #: CUDA graphs for fixed-shape steps: ``auto`` (off until measured: rnnlab.train.graphs),
    #: ``on`` or ``off``
    cuda_graphs: str = option(one_of(*CUDA_GRAPHS))
    #: intra-op threads: ``auto`` (cores / concurrent jobs: rnnlab.train.threads) or N
    threads: str = option(Rule(valid_threads, "auto or a positive integer"))
    #: data-parallel processes on this node (1: one process; rnnlab.train.distributed)
    devices: int = option(POSITIVE)
    #: seconds a collective may wait for the other ranks before the run fails
    dist_timeout_s: float = option(POSITIVE)
