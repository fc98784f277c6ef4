"""Intra-op thread policy: ``trainer.threads=auto`` gives each process its share of the cores.

torch starts every process with one intra-op thread per core. Several training processes on
one machine then oversubscribe it: on a 2-core CPU shared by several jobs, one thread per job
was 7-10x faster per batch than two (docs/benchmarks.md, "Threads"). ``auto`` therefore
gives each process ``cores // concurrent processes`` threads (at least one):

* a single run: all cores;
* a job of a sweep whose launcher runs ``n_jobs`` at once (``hydra/launcher=joblib``):
  ``cores // n_jobs``, so 1 per job once ``n_jobs >= cores``;
* a rank of distributed training: ``cores // world size`` (``WORLD_SIZE``, or the
  initialised process group);
* ``OMP_NUM_THREADS`` set in the environment wins over all of these: the user asked for it.
  (joblib's loky workers get ``OMP_NUM_THREADS=cores // n_jobs`` from joblib unless the user
  set it, the same share; the policy makes it hold for every launcher and under DDP.)

``trainer.threads=N`` sets N whatever the rest.
"""

from __future__ import annotations

import os

import torch

#: what trainer.threads accepts besides a positive integer
AUTO = "auto"


def valid_threads(value: object) -> bool:
    """``auto`` or a positive integer (as the config gives it, an int or its digits)."""
    text = str(value)
    return text == AUTO or (text.isdigit() and int(text) > 0)


def available_cores() -> int:
    """The cores this process may run on (its affinity mask, e.g. under taskset/SLURM)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def world_size() -> int:
    """Processes of a distributed run (1 outside distributed training)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    text = os.environ.get("WORLD_SIZE", "1")
    return int(text) if text.isdigit() and int(text) > 0 else 1


def user_omp_threads() -> int | None:
    text = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def resolve_threads(requested: str | int, *, concurrent_jobs: int = 1) -> tuple[int, str]:
    """``(threads, reason)`` for ``trainer.threads`` in a process that runs beside
    ``concurrent_jobs - 1`` others of the same sweep."""
    if str(requested) != AUTO:
        return int(requested), "set by trainer.threads"
    omp = user_omp_threads()
    if omp is not None and concurrent_jobs > 1:  # joblib's loky workers get it set for them
        return omp, f"auto: OMP_NUM_THREADS={omp}, {concurrent_jobs} sweep jobs at once"
    if omp is not None:
        return omp, f"auto: OMP_NUM_THREADS={omp}"
    cores, world = available_cores(), world_size()
    if world > 1:
        return max(1, cores // world), f"auto: {cores} cores / world size {world}"
    if concurrent_jobs > 1:
        share = max(1, cores // concurrent_jobs)
        return share, f"auto: {cores} cores / {concurrent_jobs} sweep jobs at once"
    return cores, f"auto: all {cores} cores, one run"


def apply_threads(requested: str | int, *, concurrent_jobs: int = 1) -> tuple[int, str]:
    """Resolve the policy and set torch's intra-op thread count; returns what was chosen."""
    threads, reason = resolve_threads(requested, concurrent_jobs=concurrent_jobs)
    torch.set_num_threads(threads)
    return threads, reason
