"""Data-parallel training: DDP over gloo on 2 CPU processes.

- Equivalence (float64): after k steps, world size 2 with per-rank batch b gives the same
  parameters as one process with batch 2b on the same data, for ptb_tiny and
  multi30k_tiny; and a resume from a mid-epoch checkpoint (per-rank TBPTT states) continues
  bit-exactly. The ranks are real ``torch.multiprocessing`` workers running the real
  training code (``train_model`` with ``Ranks``), here without MLflow.
- The CLI: ``trainer.devices=2`` end to end as a real process: Ctrl-C stops both ranks, the
  run is KILLED with the group's tags and a checkpoint holding both ranks, resuming it under
  another world size is refused; a rank killed mid-run takes the run down within seconds,
  FAILED with the rank and the reason.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import RNNLAB, cli_inprocess, compose, runs_of

from rnnlab.train.checkpoint import load_checkpoint

PTB = ["experiment=ptb_tiny", "device=cpu", "trainer.max_epochs=2"]
TRANSLATE = ["experiment=multi30k_tiny", "device=cpu", "trainer.max_epochs=1"]
#: epochs of the Ctrl-C run: enough that the signal lands mid-run, few enough to resume fast
EPOCHS = 8
#: the per-rank batch b (the single process trains on 2b)
HALF = {"ptb": 5, "translate": 16}


class KeepingRecorder:
    """A Recorder that keeps every ``last`` checkpoint it is given (last-<n>.pt)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.count = folder, 0

    def log_metrics(self, metrics, *, step):
        return None

    def set_tags(self, tags):
        return None

    def write_checkpoint(self, name, write):
        if name == "last":
            self.count += 1
            write(self.folder / f"last-{self.count}.pt")
        else:
            write(self.folder / f"{name}.pt")


def train_f64(overrides: list[str], folder: Path, ranks=None, resume=None) -> None:
    """train_model in float64 on ``overrides``; rank 0 (or the one process) keeps checkpoints."""
    from rnnlab.compose import compose as compose_spec
    from rnnlab.train.distributed import SOLO
    from rnnlab.train.recorder import NullRecorder
    from rnnlab.train.run import train_model

    ranks = ranks or SOLO
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        spec = compose_spec(compose(overrides))
        train_model(
            task=spec.task,
            stack=spec.stack,
            optimizer=spec.optimizer,
            scheduler=spec.scheduler,
            settings=spec.trainer,
            recorder=KeepingRecorder(folder) if ranks.main else NullRecorder(),
            device=spec.device,
            seed=spec.seed,
            config_yaml=spec.config_yaml,
            resume=resume,
            ranks=ranks,
        )
    finally:
        torch.set_default_dtype(previous)


def ddp_worker(index: int, overrides: list[str], out: str, resume_from: int | None) -> None:
    """Rank ``index`` of 2: train straight; then, if asked, resume from rank 0's
    ``resume_from``-th checkpoint and train to the end again (into out/resumed)."""
    from rnnlab.train.distributed import Ranks, join, leave

    ranks = join(
        Ranks(rank=index, world_size=2, local_rank=index), torch.device("cpu"), timeout_s=60
    )
    try:
        train_f64(overrides, Path(out) / "straight", ranks)
        if resume_from is not None:
            checkpoint = load_checkpoint(Path(out) / "straight" / f"last-{resume_from}.pt")
            train_f64(overrides, Path(out) / "resumed", ranks, resume=checkpoint)
    finally:
        leave()


def spawn_ranks(overrides: list[str], out: Path, resume_from: int | None = None) -> None:
    import socket

    import torch.multiprocessing as mp

    for sub in ("straight", "resumed"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.MonkeyPatch.context() as mp_env:
        mp_env.setenv("MASTER_ADDR", "127.0.0.1")
        mp_env.setenv("MASTER_PORT", str(port))
        mp_env.setenv("OMP_NUM_THREADS", "1")  # read by each rank's torch at start-up
        mp.spawn(ddp_worker, args=(overrides, str(out), resume_from), nprocs=2)


def final_weights(folder: Path) -> dict[str, torch.Tensor]:
    last = max(folder.glob("last-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    return load_checkpoint(last)["model"]


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


@pytest.mark.parametrize(
    ("task", "overrides"),
    # translate in make test-all: the same DDP step and reduction, through the seq2seq model
    [("ptb", PTB), pytest.param("translate", TRANSLATE, marks=pytest.mark.slow)],
    ids=["ptb_tiny", "multi30k"],
)
def test_ddp_world_2_matches_one_process_with_twice_the_batch(
    task, overrides, shared_data, tmp_path
):
    half = HALF[task]
    # ptb: resume from the checkpoint at step 25 (mid epoch 1: per-rank TBPTT states)
    extra = ["trainer.checkpoint_every=25"] if task == "ptb" else []
    resume_from = 1 if task == "ptb" else None
    spawn_ranks([*overrides, *extra, f"task.batch_size={half}"], tmp_path / "ddp", resume_from)
    single = tmp_path / "single"
    single.mkdir()
    train_f64([*overrides, *extra, f"task.batch_size={2 * half}"], single)
    ddp = final_weights(tmp_path / "ddp" / "straight")
    one = final_weights(single)
    difference = max_difference(ddp, one)
    print(f"DDP (2 x {half}) vs one process ({2 * half}), {task}: max |diff| = {difference:.3g}")
    assert difference < 1e-6
    assert max(float(v.abs().max()) for v in ddp.values()) > 0  # trained, not all zeros
    straight_last = load_checkpoint(sorted((tmp_path / "ddp" / "straight").glob("last-*.pt"))[0])
    assert straight_last["world_size"] == 2 and len(straight_last["ranks"]) == 2
    if resume_from is not None:
        resumed = final_weights(tmp_path / "ddp" / "resumed")
        for key, value in ddp.items():
            assert torch.equal(value, resumed[key]), f"resume not bit-exact at {key}"
        carries = [r["carry"][0][0] for r in straight_last["ranks"]]  # layer 0's h, per rank
        assert not torch.equal(carries[0], carries[1])  # each rank its own stream's state


# -- the CLI, as a real process ------------------------------------------------------------


def one_thread() -> dict[str, str]:
    """The environment of the CLI runs: no MLFLOW_* leakage, one thread per rank (2 ranks on
    a 2-core machine; more threads per rank oversubscribe the cores and spin in OpenMP)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return {**env, "OMP_NUM_THREADS": "1"}


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [*RNNLAB, *args],
        cwd=cwd,
        env=one_thread(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: killpg is a terminal's Ctrl-C
    )


@pytest.fixture
def launched():
    """Processes a test started (in their own process groups): killed, ranks included, if a
    failed assertion left them running."""
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def wait_for_checkpoint(cwd: Path, proc: subprocess.Popen, *, after_epoch: int) -> Path:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended before a checkpoint: {proc.communicate()}"
        for path in cwd.glob("mlartifacts/*/*/artifacts/checkpoints/last.pt"):
            try:
                if load_checkpoint(path)["progress"]["epoch"] > after_epoch:
                    return path
            except Exception:
                pass  # being replaced right now; the rename makes the next read whole
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


def worker_pids(parent: int) -> list[int]:
    """The spawned rank processes of ``parent`` (not multiprocessing's resource tracker)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue  # not a process, or gone
        if ppid == parent and "spawn_main" in cmdline:
            pids.append(int(proc.name))
    return sorted(pids)


@pytest.mark.slow  # make test-all: three real launches (stop, refused resume, resume)
def test_ctrl_c_stops_every_rank_and_resume_needs_the_same_world_size(
    shared_data, workdir, client, launched
):
    proc = start(["train", *PTB, f"trainer.max_epochs={EPOCHS}", "trainer.devices=2"], workdir)
    launched.append(proc)
    wait_for_checkpoint(workdir, proc, after_epoch=1)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: every process
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Interrupted by SIGINT" in err and "Traceback" not in err
    (run,) = runs_of(client, "ptb")
    assert run.info.status == "KILLED"
    tags, params = run.data.tags, run.data.params
    assert (tags["world_size"], tags["backend"], tags["effective_batch_size"]) == (
        "2",
        "gloo",
        "20",
    )
    assert params["trainer.devices"] == "2"
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) >= 1
    (path,) = workdir.glob("mlartifacts/*/*/artifacts/checkpoints/last.pt")
    checkpoint = load_checkpoint(path)
    assert checkpoint["world_size"] == 2 and len(checkpoint["ranks"]) == 2
    assert not worker_pids(proc.pid)
    refused = cli_inprocess("train", f"resume={run.info.run_id}", "device=cpu", cwd=workdir)
    assert refused.returncode == 2, refused.stderr
    assert "checkpointed by 2 rank(s)" in refused.stderr
    assert "trainer.devices=2" in refused.stderr and "Traceback" not in refused.stderr
    assert client.get_run(run.info.run_id).info.status == "KILLED"  # left as it was
    resumed = subprocess.run(
        [*RNNLAB, "train", f"resume={run.info.run_id}", "trainer.devices=2", "device=cpu"],
        cwd=workdir,
        env=one_thread(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming run" in resumed.stdout
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert sorted(steps) == list(range(1, EPOCHS + 1))  # every epoch once, none repeated


@pytest.mark.slow  # make test-all (~18 s): keeps make test under 5 minutes on 2 cores
def test_a_dying_rank_takes_the_run_down_within_seconds(shared_data, workdir, client, launched):
    # the run fails before any model is logged: its tracking process need not load torch
    args = ["train", *PTB, "trainer.max_epochs=400", "trainer.devices=2"]
    proc = start([*args, "tracking.log_model=false"], workdir)
    launched.append(proc)
    wait_for_checkpoint(workdir, proc, after_epoch=1)
    ranks = worker_pids(proc.pid)
    assert len(ranks) == 2, ranks
    killed = time.monotonic()
    os.kill(ranks[1], signal.SIGKILL)  # rank 1 (spawned second) dies, as the OOM killer would
    _, err = proc.communicate(timeout=120)
    took = time.monotonic() - killed
    print(f"a SIGKILLed rank ended the run in {took:.1f} s")
    assert took < 20
    assert proc.returncode == 1, err
    assert "Rank 1 of 2 failed" in err and "SIGKILL" in err
    (run,) = runs_of(client, "ptb")
    assert run.info.status == "FAILED"
    reason = run.data.tags["failure_reason"]
    assert reason.startswith("rank 1 of 2") and "SIGKILL" in reason
    assert not worker_pids(proc.pid)


def test_slurm_tasks_join_the_group_submitit_describes(monkeypatch):
    """Task 5 of 8 (2 nodes x 4) of a SLURM job: submitit's TorchDistributedEnvironment
    exports the torchrun variables, rnnlab reads its rank from them."""
    from rnnlab.train.distributed import from_environment, slurm_environment

    exported = (
        "MASTER_ADDR",
        "MASTER_PORT",
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
    )
    for name in exported:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)  # undone: absent again after the test
    slurm = {
        "SLURM_JOB_ID": "4242",
        "SLURM_NTASKS": "8",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_NODEID": "1",
        "SLURM_JOB_NODELIST": "gpu[07-08]",
        "SLURM_PROCID": "5",
        "SLURM_LOCALID": "1",
        "SUBMITIT_EXECUTOR": "slurm",  # what the submitit launcher's jobs run under
    }
    for name, value in slurm.items():
        monkeypatch.setenv(name, value)
    assert from_environment() is None
    assert slurm_environment(1) is None  # trainer.devices=1: a plain job, no group
    ranks = slurm_environment(4)
    assert (ranks.rank, ranks.world_size, ranks.local_rank) == (5, 8, 1)
    assert os.environ["MASTER_ADDR"] == "gpu07" and int(os.environ["MASTER_PORT"]) > 0


def test_torchrun_ranks_join_its_group_and_rank_0_records_the_run(workdir, client):
    """``torchrun -m rnnlab train``: each process is a rank of the group torchrun made."""
    args = ["--standalone", "--nproc-per-node=2", "-m", "rnnlab", "train"]
    args += ["task.batch_size=10", "trainer.max_epochs=3", "device=cpu"]
    args += ["tracking.log_model=false"]  # not about the model: the tracker skips torch
    done = subprocess.run(
        [str(Path(RNNLAB[0]).parent / "torchrun"), *args],
        cwd=workdir,
        env=one_thread(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = runs_of(client, "bitcount")  # one run: rank 1 recorded nothing
    assert run.info.status == "FINISHED"
    assert run.data.tags["world_size"] == "2" and run.data.tags["backend"] == "gloo"
    assert run.data.tags["effective_batch_size"] == "20"
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 3


def test_rank_shards_split_each_global_batch(shared_data):
    """At every step the ranks' batches are disjoint and together make the batch of one
    process with twice the batch size (ptb: streams; translate, bitcount: examples)."""
    from conftest import task_from_config

    def shards(name, batch, **options):
        one = task_from_config(name, batch_size=2 * batch, **options)
        ranks = [
            task_from_config(name, batch_size=batch, **options).shard(rank=r, world_size=2)
            for r in range(2)
        ]
        return zip(*(t.train_batches(epoch=1) for t in (one, *ranks)), strict=True)

    ptb = {"max_tokens": 4000, "vocab_size": 500, "bptt": 10}
    for (x, _), (x0, _), (x1, _) in shards("ptb", 5, **ptb):
        assert torch.equal(torch.cat([x0, x1], dim=1), x)  # rank r: streams 5r .. 5r+4
    for (x, y), (x0, y0), (x1, y1) in shards("bitcount", 4, n_train=24):
        assert torch.equal(x[:, 0::2], x0) and torch.equal(x[:, 1::2], x1)
        assert torch.equal(y[0::2], y0) and torch.equal(y[1::2], y1)
    multi30k = {"max_train": 150, "min_freq": 1}
    for one, first, second in shards("translate", 8, **multi30k):
        assert one.tokens == first.tokens + second.tokens
        lengths = torch.cat([first.src_lengths, second.src_lengths]).sort().values
        assert torch.equal(lengths, one.src_lengths.sort().values)
        assert abs(first.src.shape[0] - second.src.shape[0]) <= 2  # similar lengths
