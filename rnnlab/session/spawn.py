"""Data-parallel runs of ``rnnlab train``: rnnlab's own launcher, and joining a given group.

:func:`run_any` is what the Hydra job calls. It runs

- one process (:func:`rnnlab.session.run.run_job`) when ``trainer.devices`` is 1;
- one rank of the group torchrun (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ...) or SLURM
  (submitit's ``TorchDistributedEnvironment``) started: rank 0 opens the MLflow run, the
  others record nothing (:func:`run_rank`);
- N worker processes of its own for ``trainer.devices=N`` (:func:`launch_job`):
  ``torch.multiprocessing`` spawns them, one rank each, on a free local port. This launcher
  process opens (or reopens) the MLflow run before the workers start, rank 0 writes it while
  they train, and the launcher records how it ended when a rank failed: FAILED with the
  rank and the reason. A rank that fails exits non-zero and torch's launcher terminates the
  others at once (gloo also fails a collective whose peer is gone); a stop signal is
  forwarded to every worker as SIGTERM, they checkpoint at the same step, and the run is
  KILLED and resumable with the same ``trainer.devices``.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rnnlab.compose import RunSpec, compose
from rnnlab.errors import ConfigError, RnnlabError, user_error
from rnnlab.session import sidecar
from rnnlab.session.record import origin_tags
from rnnlab.session.run import execute, finish, run_job
from rnnlab.tracking.logger import RunLogger
from rnnlab.tracking.uri import resolve_tracking_uri
from rnnlab.train.distributed import (
    RankFailed,
    Ranks,
    backend_for,
    check_world_size,
    collective_failed,
    from_environment,
    join,
    leave,
    slurm_environment,
)
from rnnlab.train.loop import Stopped
from rnnlab.train.recorder import NullRecorder
from rnnlab.train.run import train_model
from rnnlab.train.signals import Interrupted


def run_any(
    cfg: DictConfig,
    *,
    sweep: tuple[dict[str, str], str | None] = ({}, None),
    concurrent_jobs: int = 1,
) -> float:
    """The job: one process, one rank of a group given, or N ranks launched here."""
    devices = cfg.trainer.get("devices", 1)
    devices = devices if isinstance(devices, int) else 1  # a bad value: compose says so
    ranks = from_environment() or slurm_environment(devices)
    if ranks is not None or devices > 1:
        sidecar.discard()  # rank 0 or the launcher writes the run, in process
    if ranks is not None:
        return run_rank(cfg, ranks, sweep=sweep)
    if devices > 1:
        return launch_job(cfg, sweep=sweep)
    return run_job(cfg, sweep=sweep, concurrent_jobs=concurrent_jobs)


def open_run(
    spec: RunSpec, cfg: DictConfig, sweep: tuple[dict[str, str], str | None], *, world_size: int
) -> RunLogger:
    """A new MLflow run for ``spec`` with its params and the group's tags. The data are checked
    first as rank 0 of ``world_size`` lays them out (every rank's shard has its size), so a
    value that fits one process but not a rank's shard is refused before any run exists."""
    tags, parent = sweep
    spec.task.shard(rank=0, world_size=world_size)
    spec.task.prepare()  # the data, and the values only the data can check: before the run
    logger = RunLogger(
        uri=resolve_tracking_uri(spec.tracking.uri),
        experiment=spec.experiment,
        run_name=spec.run_name,
        tags={**tags, **spec.tags, **origin_tags(spec, rerun_of=cfg.get("rerun"))},
        parent_run_id=parent,
        flush_every_s=spec.tracking.flush_every_s,
        heartbeat_s=spec.tracking.heartbeat_s,
    )
    logger.log_params(spec.params)
    return logger


def group_tags(spec: RunSpec, world_size: int) -> dict[str, str]:
    ranks = Ranks(world_size=world_size, backend=backend_for(spec.device))
    return ranks.tags(batch_size=getattr(spec.task.options, "batch_size", None))


# -- one rank of a group that torchrun or SLURM started -----------------------------------


def run_rank(cfg: DictConfig, ranks: Ranks, *, sweep: tuple[dict[str, str], str | None]) -> float:
    """Join the group; rank 0 opens the run and writes it, the others record nothing."""
    started = time.perf_counter()
    if cfg.get("resume"):
        raise RnnlabError(
            "resume= under torchrun or SLURM is not supported yet",
            f"Resume on one node with rnnlab train resume={cfg.resume} "
            "trainer.devices=N (the same number of ranks)",
        )
    spec = compose(cfg)
    ranks = join(ranks, ranks.place(spec.device), timeout_s=spec.trainer.dist_timeout_s)
    try:
        if not ranks.main:
            train_rest(spec, ranks, config_yaml=spec.config_yaml, resume=None)
            return 0.0
        logger = open_run(spec, cfg, sweep, world_size=ranks.world_size)
        logger.set_tags(group_tags(spec, ranks.world_size))
        outcome = execute(spec, logger, config_yaml=spec.config_yaml, ranks=ranks)
        uri = resolve_tracking_uri(spec.tracking.uri)
        return finish(outcome, spec, logger, uri=uri, started=started, setup=0.0)
    finally:
        leave()


def train_rest(spec: RunSpec, ranks: Ranks, *, config_yaml: str, resume: Any) -> None:
    """What a rank other than 0 does: train its shard, record nothing."""
    gc.enable()  # start-up is over (rnnlab.commands.train turned the collector off for it)
    train_model(
        task=spec.task,
        stack=spec.stack,
        optimizer=spec.optimizer,
        scheduler=spec.scheduler,
        settings=spec.trainer,
        recorder=NullRecorder(),
        device=spec.device,
        seed=spec.seed,
        config_yaml=config_yaml,
        resume=resume,
        ranks=ranks,
    )


# -- rnnlab's own launcher: trainer.devices=N ----------------------------------------------


@dataclass
class Job:
    """What every worker needs, pickled to it by ``torch.multiprocessing``."""

    compose_yaml: str  # the config the workers compose (device/devices of this command)
    config_yaml: str  # the run's own config, as checkpoints keep it
    run_id: str
    uri: str
    world_size: int
    results: str  # a folder: each worker writes rank<N>.json there as it ends
    started: float
    resume: dict[str, Any] | None = None
    heartbeat_s: float = 30.0  # the run's lease (rnnlab.tracking.lease): rank 0 holds it


def launch_job(cfg: DictConfig, *, sweep: tuple[dict[str, str], str | None]) -> float:
    """Open (or reopen) the run, start ``trainer.devices`` workers, and report how they ended."""
    started = time.perf_counter()
    logger, spec, job = prepare(cfg, sweep=sweep, started=started)
    gc.enable()  # start-up is over (rnnlab.commands.train turned the collector off for it)
    logger.lease.release()  # one writer per run: rank 0 takes the lease while workers train
    try:
        with tempfile.TemporaryDirectory(prefix="rnnlab-ranks-") as results:
            job.results = results
            codes = launch(job)
            outcomes = read_results(Path(results), job.world_size)
        return conclude(codes, outcomes, logger, job)
    except KeyboardInterrupt:
        take_back(logger, job)
        logger.fail("interrupted by the user (Ctrl-C)", status="KILLED")
        raise
    except (RankFailed, Interrupted):
        raise  # the run is already ended, with the rank and reason
    except BaseException as exc:
        take_back(logger, job)
        logger.fail(f"{type(exc).__name__}: {exc}")
        raise


def take_back(logger: RunLogger, job: Job) -> None:
    """The launcher's lease on the run again, once the workers are gone, to record how the
    run ended (rank 0 released it, or died holding it: its OS lock went with it)."""
    from rnnlab.tracking.lease import Lease

    run = logger.client.get_run(job.run_id)
    logger.lease = Lease.acquire(
        logger.client, uri=job.uri, run=run, heartbeat_s=job.heartbeat_s, force=True
    )


def prepare(
    cfg: DictConfig, *, sweep: tuple[dict[str, str], str | None], started: float
) -> tuple[RunLogger, RunSpec, Job]:
    """Compose, open the run (or reopen it to resume) and describe the workers' job."""
    resume = None
    if cfg.get("resume"):
        from rnnlab.session.restore import resume_checkpoint
        from rnnlab.tracking.lease import Lease
        from rnnlab.tracking.store import connect, get_run

        run_id, uri = str(cfg.resume), resolve_tracking_uri(cfg.tracking.uri)
        client = connect(uri, writes=True)
        run = get_run(client, run_id, uri=uri, asked_as=f"resume={run_id}")
        beat, force = cfg.tracking.heartbeat_s, bool(cfg.get("force"))
        lease = Lease.acquire(client, uri=uri, run=run, heartbeat_s=beat, force=force)
        try:
            resume = resume_checkpoint(client, lease.run)
            run_cfg = OmegaConf.create(resume["config"])
            run_cfg.device, run_cfg.trainer.devices = cfg.device, cfg.trainer.devices
            run_cfg.force, run_cfg.tracking.heartbeat_s = False, beat
            spec = compose(run_cfg)
            check_gpus(spec.device, spec.trainer.devices)
            check_world_size(resume, spec.trainer.devices, run_id=run_id)
        except BaseException:
            lease.release()
            raise
        logger = RunLogger.reopen(uri=uri, lease=lease, flush_every_s=0.0)
        config_yaml, compose_yaml = resume["config"], OmegaConf.to_yaml(run_cfg)
        epoch = resume["progress"]["epoch"]
        print(f"resuming run {logger.run_name} ({run_id}) at epoch {epoch}", flush=True)
    else:
        spec = compose(cfg)
        check_gpus(spec.device, spec.trainer.devices)
        logger = open_run(spec, cfg, sweep, world_size=spec.trainer.devices)
        config_yaml = compose_yaml = spec.config_yaml
    world = spec.trainer.devices
    logger.set_tags(group_tags(spec, world))
    job = Job(compose_yaml, config_yaml, logger.run_id, logger.uri, world, "", started, resume)
    job.heartbeat_s = spec.tracking.heartbeat_s
    return logger, spec, job


def check_gpus(device: Any, devices: int) -> None:
    """On CUDA each rank needs its own GPU."""
    import torch

    visible = torch.cuda.device_count() if device.type == "cuda" else devices
    if visible < devices:
        raise ConfigError(
            f"trainer.devices={devices} on CUDA needs {devices} GPUs, and torch sees {visible}",
            f"Use trainer.devices={visible} (or fewer), or device=cpu for CPU processes",
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(job: Job) -> list[int]:
    """Run the workers to their end; their exit codes (negative: killed by that signal).
    Stop signals reach every worker as SIGTERM."""
    import torch.multiprocessing as mp

    saved = {name: os.environ.get(name) for name in ("MASTER_ADDR", "MASTER_PORT")}
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    try:  # the workers inherit the rendezvous address; this process keeps its environment
        context = mp.start_processes(
            worker, args=(job,), nprocs=job.world_size, join=False, start_method="spawn"
        )
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    with Forwarding(context.processes):
        try:
            while not context.join(timeout=0.5):
                pass
        except (mp.ProcessExitedException, mp.ProcessRaisedException):
            pass  # torch has stopped the other ranks; the codes and reports say the rest
    return [process.exitcode for process in context.processes]


class Forwarding:
    """While the workers run: the first SIGINT/SIGTERM is sent on to them as SIGTERM (they
    checkpoint and stop together); a second Ctrl-C kills them and interrupts at once."""

    def __init__(self, processes: list[Any]) -> None:
        self.processes = processes
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            for process in self.processes:
                process.kill()
            raise KeyboardInterrupt
        self.signum = signum
        for process in self.processes:
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)

    def __enter__(self) -> Forwarding:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.previous[signum] = signal.signal(signum, self.handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def worker(index: int, job: Job) -> None:
    """One rank: join the group, train, write ``rank<index>.json``; exit non-zero on a
    failure (torch's launcher then stops the other ranks), zero on a clean stop."""
    ranks = Ranks(rank=index, world_size=job.world_size, local_rank=index)
    world = str(job.world_size)
    os.environ.update(RANK=str(index), LOCAL_RANK=str(index), WORLD_SIZE=world)
    os.environ["LOCAL_WORLD_SIZE"] = world
    try:
        outcome = {"status": "ok", "objective": train_worker(ranks, job)}
        code = 0
    except BaseException as exc:
        outcome, code = describe(exc, index)
    finally:
        leave()
    path = Path(job.results) / f"rank{index}.json"
    path.write_text(json.dumps(outcome))
    sys.exit(code)


def train_worker(ranks: Ranks, job: Job) -> float:
    spec = compose(OmegaConf.create(job.compose_yaml))
    ranks = join(ranks, ranks.place(spec.device), timeout_s=spec.trainer.dist_timeout_s)
    if not ranks.main:
        train_rest(spec, ranks, config_yaml=job.config_yaml, resume=job.resume)
        return 0.0
    from rnnlab.tracking.lease import Lease
    from rnnlab.tracking.store import connect

    client = connect(job.uri, writes=True)
    run = client.get_run(job.run_id)  # the launcher released its lease for this rank
    lease = Lease.acquire(client, uri=job.uri, run=run, heartbeat_s=job.heartbeat_s, force=True)
    flush = spec.tracking.flush_every_s
    logger = RunLogger.reopen(uri=job.uri, lease=lease, flush_every_s=flush)
    outcome = execute(spec, logger, config_yaml=job.config_yaml, resume=job.resume, ranks=ranks)
    return finish(outcome, spec, logger, uri=job.uri, started=job.started, setup=0.0)


def describe(exc: BaseException, rank: int) -> tuple[dict[str, Any], int]:
    """How a worker ended, for the launcher (and its exit code): a clean stop exits 0."""
    if isinstance(exc, Stopped):
        where = {"epoch": exc.progress.epoch, "step": exc.progress.step}
        return {"status": "stopped", "signum": exc.signum, **where}, 0
    if isinstance(exc, Interrupted):  # rank 0: the run is already marked KILLED
        where = {"epoch": exc.epoch, "step": exc.step}
        return {"status": "stopped", "signum": exc.signum, **where}, 0
    if isinstance(exc, KeyboardInterrupt):
        return {"status": "failed", "message": "interrupted by a second Ctrl-C"}, 130
    if collective_failed(exc):  # a peer died or hung: that rank is the one to report
        message = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        return {"status": "collective", "message": message}, 1
    error = user_error(exc)
    if error is not None:
        return {"status": "failed", "message": str(error), "code": error.exit_code}, 1
    print(f"rank {rank}:", file=sys.stderr)
    traceback.print_exc()
    return {"status": "failed", "message": f"{type(exc).__name__}: {exc}"}, 1


def read_results(folder: Path, world_size: int) -> dict[int, dict[str, Any]]:
    outcomes = {}
    for rank in range(world_size):
        path = folder / f"rank{rank}.json"
        if path.exists():
            outcomes[rank] = json.loads(path.read_text())
    return outcomes


def conclude(
    codes: list[int], outcomes: dict[int, dict[str, Any]], logger: RunLogger, job: Job
) -> float:
    """The objective when every rank finished; else the run is ended and an error raised."""
    world = job.world_size
    reports = [outcomes.get(rank, {}).get("status") for rank in range(world)]
    if all(status == "ok" for status in reports):
        return float(outcomes[0]["objective"])
    take_back(logger, job)
    if all(status == "stopped" for status in reports):
        first = outcomes[0]
        logger.fail(f"stopped by signal {first['signum']}; resumable", status="KILLED")
        raise Interrupted(
            signum=first["signum"], run_id=job.run_id, epoch=first["epoch"], step=first["step"]
        )
    rank, reason, code = root_cause(codes, outcomes)
    logger.fail(f"rank {rank} of {world}: {reason}")
    raise RankFailed(rank=rank, world_size=world, reason=reason, exit_code=code)


def root_cause(codes: list[int], outcomes: dict[int, dict[str, Any]]) -> tuple[int, str, int]:
    """(rank, reason, exit code) of what ended the run: a rank's own error first, then a
    rank that died without a word (killed), then a failed collective."""
    for rank, outcome in sorted(outcomes.items()):
        if outcome.get("status") == "failed":
            return rank, outcome["message"], int(outcome.get("code", 1))
    silent = [rank for rank in range(len(codes)) if rank not in outcomes]
    silent.sort(key=lambda rank: codes[rank] == -signal.SIGTERM)  # torch's own SIGTERMs last
    for rank in silent:
        code = codes[rank]
        how = f"killed by {signal.Signals(-code).name}" if code and code < 0 else f"exit {code}"
        return rank, f"the process died ({how}) without a report", 1
    for rank, outcome in sorted(outcomes.items()):
        if outcome.get("status") == "collective":
            return rank, outcome["message"], 1
    return 0, "the workers ended without a result", 1
