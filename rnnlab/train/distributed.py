"""Data-parallel training over ``torch.distributed``: which rank this process is, and the few
collectives training needs.

A :class:`Ranks` says where a process stands (rank, world size, local rank, backend). The
single-process value :data:`SOLO` makes every method a no-op, so the loop calls them without
branching on whether it is distributed. Under a group of N ranks:

- the model is wrapped in ``DistributedDataParallel`` (gradients averaged over ranks);
- each optimizer step agrees on two numbers in one all-reduce: the global batch weight (so
  the gradient is that of the global mean loss, whatever each rank's share of tokens) and the
  stop request (a signal on any rank stops every rank at the same step, none is left in a
  collective);
- epoch metrics are sums over ranks; rank 0 alone evaluates and broadcasts what it found, so
  every rank keeps the same best weights and steps its scheduler the same way;
- checkpoints gather every rank's own state (TBPTT carry, partial epoch loss, RNG) to rank 0.

The group is made by rnnlab itself (``trainer.devices=N``, :mod:`rnnlab.session.spawn`), by
``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) or by
SLURM (submitit's ``TorchDistributedEnvironment`` exports the same variables). Backends:
NCCL on CUDA, gloo on the CPU. :func:`world_size` is what other modules (thread counts) read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
from torch import nn

from rnnlab.errors import ConfigError, RnnlabError

#: the environment variables torchrun (and submitit's export) set for every rank
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class RankFailed(RnnlabError):
    """One rank of a data-parallel run failed or died; the others were stopped."""

    def __init__(self, *, rank: int, world_size: int, reason: str, exit_code: int = 1) -> None:
        self.exit_code = exit_code
        self.rank = rank
        super().__init__(
            f"Rank {rank} of {world_size} failed: {reason.rstrip('.')}; the other ranks were "
            "stopped and the run is marked FAILED",
            "Fix the cause named above (a rank's traceback, if any, is printed above this "
            "line); resume with rnnlab train resume=RUN_ID trainer.devices=N (same N)",
        )


@dataclass(frozen=True)
class Ranks:
    """This process's place in a data-parallel group (:data:`SOLO` when there is none)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def place(self, device: torch.device) -> torch.device:
        """The device this rank trains on: its own GPU (by local rank) on CUDA."""
        if not self.distributed or device.type != "cuda":
            return device
        device = torch.device("cuda", self.local_rank)
        torch.cuda.set_device(device)
        return device

    def wrap(self, model: nn.Module) -> nn.Module:
        """``DistributedDataParallel(model)`` in a group; the model itself otherwise."""
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device = next(model.parameters()).device
        ids = [device.index] if device.type == "cuda" else None
        # a model whose loss may not reach all its parameters says so; DDP then searches the
        # graph for them every step, where otherwise its second step would fail waiting for
        # their gradients. The others skip that search, which costs a graph walk per step
        unused = bool(getattr(model, "may_leave_parameters_unused", False))
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)

    def agree(
        self, weight: float, signum: int | None, *, summed: bool, out_of_time: bool = False
    ) -> tuple[float, int | None, bool]:
        """(loss scale, stop signal, time budget spent) for one step, in one all-reduce.

        DDP averages gradients over ranks. A task whose loss is a mean over its ``weight``
        (tokens) gets scale ``W·w / Σw``, so the averaged gradient is that of the global
        mean; a summed loss gets scale ``W``, so it is that of the global sum. A stop signal
        seen by any rank is returned to all of them, and so is a spent time budget
        (``trainer.max_time_s``: each rank reads its own clock, and all must end the epoch
        at the same step or the others would wait in a collective).
        """
        if not self.distributed:
            return 1.0, signum, out_of_time
        import signal

        import torch.distributed as dist

        interrupt = signum == signal.SIGINT
        flags = [float(weight), float(interrupt), float(signum is not None and not interrupt)]
        total = torch.tensor([*flags, float(out_of_time)], dtype=torch.float64)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        if signum is None and total[1] > 0:
            signum = signal.SIGINT
        elif signum is None and total[2] > 0:
            signum = signal.SIGTERM
        scale = float(self.world_size) if summed else self.world_size * weight / float(total[0])
        return scale, signum, bool(total[3] > 0)

    def sum(self, *values: float | torch.Tensor) -> list[float]:
        """Each value summed over the ranks (float64), in one all-reduce (one rank: the
        values as floats, no tensor made)."""
        if not self.distributed:
            return [float(v) for v in values]
        import torch.distributed as dist

        flat = torch.tensor([float(v) for v in values], dtype=torch.float64)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        return flat.tolist()

    def from_main(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (a picklable object)."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        box = [value if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any] | None:
        """Every rank's ``value`` (moved to the CPU), as a list on rank 0; None elsewhere."""
        value = to_device(value, torch.device("cpu"))
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        out: list[Any] | None = [None] * self.world_size if self.main else None
        dist.gather_object(value, out, dst=0)
        return out

    def tags(self, *, batch_size: int | None) -> dict[str, str]:
        """What a run records about its group: world size, backend, effective batch size."""
        tags = {"world_size": str(self.world_size), "backend": self.backend or "none"}
        if batch_size is not None:
            tags["effective_batch_size"] = str(batch_size * self.world_size)
        return tags


SOLO = Ranks()


def to_device(value: Any, device: torch.device) -> Any:
    """``value`` with every tensor in it (nested in tuples, lists, dicts) moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, list | tuple):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


#: what a collective's error says when a peer rank is gone (gloo raises a plain RuntimeError)
PEER_GONE = ("Connection reset by peer", "Connection closed by peer", "gloo", "NCCL", "Timed out")


def collective_failed(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective that failed because another rank died or hung (so
    that rank, not this one, is the cause to report)."""
    import torch.distributed as dist

    if isinstance(exc, dist.DistError):
        return True
    return isinstance(exc, RuntimeError) and any(s in str(exc) for s in PEER_GONE)


def backend_for(device: torch.device) -> str:
    """NCCL on CUDA, gloo on the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def from_environment(env: Mapping[str, str] | None = None) -> Ranks | None:
    """The group torchrun or submitit's export describes in ``env``, or None outside one."""
    env = os.environ if env is None else env
    if not all(name in env for name in TORCHRUN_VARS) or int(env["WORLD_SIZE"]) < 2:
        return None
    rank = int(env["RANK"])
    return Ranks(
        rank=rank, world_size=int(env["WORLD_SIZE"]), local_rank=int(env.get("LOCAL_RANK", rank))
    )


def slurm_environment(devices: int) -> Ranks | None:
    """Inside a SLURM job step of several tasks asked to train on ``devices`` per node:
    submitit's ``TorchDistributedEnvironment`` exports the torchrun variables; the group."""
    tasks = int(os.environ.get("SLURM_NTASKS", "1"))
    if devices < 2 or tasks < 2:
        return None
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        raise ConfigError(
            f"trainer.devices={devices} inside a SLURM step of {tasks} tasks that submitit did "
            "not start: rnnlab cannot tell how the tasks form a group",
            "Submit through the launcher (rnnlab train -m hydra/launcher=slurm "
            "hydra.launcher.tasks_per_node=N trainer.devices=N ...), or run torchrun in the "
            "step (srun torchrun ... -m rnnlab train ...) with trainer.devices=1",
        )
    from submitit.helpers import TorchDistributedEnvironment

    # GPUs are picked by local rank (Ranks.place); a MASTER_PORT set by the job is kept
    TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
    return from_environment()


def join(ranks: Ranks, device: torch.device, *, timeout_s: float) -> Ranks:
    """Initialise the default process group for ``ranks`` (env:// rendezvous); every
    collective then fails after ``timeout_s`` instead of hanging. Returns ``ranks`` with
    its backend."""
    import torch.distributed as dist

    backend = backend_for(device)
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            rank=ranks.rank,
            world_size=ranks.world_size,
            timeout=timedelta(seconds=timeout_s),
        )
    return Ranks(ranks.rank, ranks.world_size, ranks.local_rank, backend)


def leave() -> None:
    """Destroy the default process group if one exists."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    """How many ranks train this run: the process group's size, else ``WORLD_SIZE``, else 1."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def check_world_size(checkpoint: Mapping[str, Any], world: int, *, run_id: str) -> None:
    """Refuse to resume a checkpoint written by another number of ranks: its TBPTT states,
    data positions and RNG streams are per rank and do not split or merge."""
    saved = int(checkpoint.get("world_size", 1))
    if saved != world:
        raise ConfigError(
            f"resume={run_id}: the run was checkpointed by {saved} rank(s) and this command "
            f"asks for {world}; per-rank training state (TBPTT states, data positions, random "
            "streams) cannot be re-split across another number of ranks",
            f"Resume with the same world size: rnnlab train resume={run_id} "
            f"trainer.devices={saved} (or torchrun with {saved} processes in all)",
        )
