"""The bad-input catalogue: each case exits non-zero with a one-paragraph message naming the
problem and the fix, prints no traceback, and leaves an earlier run untouched."""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from conftest import cli_inprocess, new_store, run_cli, runs_of

BAD_CELL = '''
import torch
from rnnlab.cells.base import Cell


class WrongStateCell(Cell):
    """Returns a state of the wrong shape: (B, 2H) instead of (B, H)."""

    def __init__(self, *, input_size, hidden_size):
        super().__init__(input_size=input_size, hidden_size=hidden_size)
        self.lin = torch.nn.Linear(input_size + hidden_size, hidden_size)

    def forward(self, x_t, state):
        (h,) = state
        h = torch.tanh(self.lin(torch.cat([x_t, h], dim=1)))
        return h, (torch.cat([h, h], dim=1),)
'''


@dataclass
class Case:
    args: list[str]
    code: int
    says: list[str]  # fragments the message must contain (problem and fix)
    env: dict[str, str] = field(default_factory=dict)
    setup: str | None = None  # name of a setup function below
    skip_if: str | None = None
    creates_no_run: bool = False  # refused while composing: no MLflow run may exist after


FAST = ["trainer.max_epochs=2", "device=cpu"]
CASES = {
    "unknown group choice": Case(
        ["train", "cell=lstmm"], 1, ["Could not find 'cell/lstmm'", "Available options"]
    ),
    "unknown key": Case(["train", "trainer.foo=1"], 1, ["trainer.foo", "+trainer.foo=1"]),
    "wrong type": Case(
        ["train", "optim.lr=abc", *FAST], 2, ["optimizer", "optim.*", "optim.lr=1e-3"]
    ),
    "negative hidden size": Case(
        ["train", "cell=lstm", "cell.hidden_size=-3", *FAST],
        2,
        ["cell.hidden_size must be a positive integer", "cell.*"],
    ),
    "zero sequences": Case(
        ["train", "task.n_train=0", *FAST], 2, ["task.n_train must be a positive", "task.* values"]
    ),
    "zero epochs": Case(
        ["train", "trainer.max_epochs=0"],
        2,
        ["trainer.max_epochs must be a positive integer", "trainer.*"],
    ),
    "fractional epochs": Case(
        ["train", "trainer.max_epochs=2.5", "device=cpu"],
        2,
        ["trainer.max_epochs", "could not be converted to Integer", "trainer.*"],
        creates_no_run=True,
    ),
    "infinite learning rate": Case(
        ["train", "optim.lr=inf", *FAST],
        2,
        ["optim.lr=inf", "must be finite", "optim.lr=1e-3"],
        creates_no_run=True,
    ),
    "non-numeric seed": Case(
        ["train", "seed=abc", *FAST],
        2,
        ["Invalid seed", "could not be converted to Integer", "seed, device"],
        creates_no_run=True,
    ),
    "negative clip": Case(
        ["train", "trainer.clip_grad_norm=-1", *FAST], 2, ["clip_grad_norm must be positive"]
    ),
    "unknown precision": Case(
        ["train", "trainer.precision=fp16", *FAST],
        2,
        ["trainer.precision must be one of fp32, bf16, got 'fp16'", "trainer.*"],
    ),
    "negative momentum": Case(
        ["train", "optim=sgd", "optim.momentum=-1", *FAST], 2, ["momentum", "optim.*"]
    ),
    "bad scheduler value": Case(
        ["train", "sched=step", "sched.step_size=abc", *FAST], 2, ["scheduler", "sched.*"]
    ),
    "unknown device": Case(["train", "device=tpu"], 2, ["Unknown device 'tpu'", "device=cpu"]),
    "cuda without a GPU": Case(
        ["train", "device=cuda", *FAST[:1]], 2, ["no CUDA GPU", "device=cpu"], skip_if="cuda"
    ),
    "resume unknown run": Case(
        ["train", "resume=feedbeef", "device=cpu"], 2, ["no run with that id", "rnnlab runs"]
    ),
    "diverging run": Case(
        ["train", "optim=sgd", "optim.lr=0.01", "trainer.max_epochs=50", "device=cpu"],
        3,
        ["diverged", "lower learning rate"],
    ),
    "cell target that does not import": Case(
        ["train", "cell=lstm", "cell.layer._target_=my_cells.Missing", *FAST],
        2,
        ["Could not build the cell", "my_cells.Missing"],
    ),
    "cell with the wrong state shape": Case(
        [
            "train",
            "cell=lstm",
            "cell.layer._target_=bad_cell.WrongStateCell",
            "~cell.layer.fused",
            "~cell.layer.weight_drop",
            "~cell.layer.layer_norm",
            *FAST,
        ],
        2,
        ["WrongStateCell.forward returned a state of shapes", "Cell interface"],
        setup="bad_cell",
    ),
    "unreachable tracking server": Case(
        ["train", "tracking.uri=http://127.0.0.1:9", *FAST],
        2,
        ["Cannot reach the MLflow tracking server", "nothing was trained"],
    ),
    "store in a missing directory": Case(
        ["train", "tracking.uri=sqlite:////nonexistent/dir/mlflow.db", *FAST],
        2,
        ["directory that does not exist", "tracking.uri"],
    ),
    "eval of an unknown run": Case(
        ["eval", "feedbeef"], 2, ["Run 'feedbeef': there is no run with that id", "rnnlab runs"]
    ),
    "runs of an unknown experiment": Case(
        ["runs", "--experiment", "nope"], 2, ["No experiment named 'nope'", "Known experiments"]
    ),
    "unknown corpus": Case(["data", "fetch", "wikitext"], 2, ["Unknown corpus 'wikitext'", "ptb"]),
    "fetch from a folder without the files": Case(
        ["data", "fetch", "ptb", "--source", "empty", "--data-dir", "fetched"],
        2,
        ["ptb.train.txt is not in", "--source"],
        setup="empty_dir",
    ),
    "fetch from a corrupt copy": Case(
        ["data", "fetch", "ptb", "--source", "corrupt", "--data-dir", "fetched"],
        2,
        ["Checksum mismatch for ptb.train.txt", "expected sha256", "nothing was written"],
        setup="corrupt_source",
    ),
    "missing dataset": Case(
        ["train", "experiment=ptb_tiny", "device=cpu"],
        2,
        ["Missing data file", "ptb.train.txt", "rnnlab data fetch ptb"],
        setup="no_data",
    ),
    "checksum mismatch": Case(
        ["train", "experiment=ptb_tiny", "device=cpu"],
        2,
        ["Checksum mismatch for", "expected sha256", "rnnlab data fetch ptb"],
        setup="edited_corpus",
    ),
    "empty corpus file": Case(
        ["train", "experiment=ptb_tiny", "device=cpu"],
        2,
        ["Checksum mismatch for", "ptb.valid.txt", "delete it"],
        setup="empty_corpus",
    ),
    "corpus with invalid UTF-8": Case(
        ["train", "experiment=ptb_tiny", "device=cpu"],
        2,
        ["Checksum mismatch for", "ptb.test.txt"],
        setup="invalid_utf8_corpus",
    ),
    "truncated gzip": Case(
        ["train", "experiment=multi30k_tiny", "device=cpu"],
        2,
        ["Checksum mismatch for", "train.de.gz", "rnnlab data fetch multi30k"],
        setup="truncated_gzip",
    ),
    "bptt larger than the data": Case(
        ["train", "experiment=ptb_tiny", "task.bptt=100000", "device=cpu"],
        2,
        ["task.bptt=100000 is larger than the training data", "task.bptt below"],
        setup="shared_corpus",
    ),
    "zero devices": Case(
        ["train", "trainer.devices=0", *FAST],
        2,
        ["trainer.devices must be a positive integer", "trainer.*"],
        creates_no_run=True,
    ),
    "devices in a SLURM step submitit did not start": Case(
        ["train", "trainer.devices=2", *FAST],
        2,
        ["inside a SLURM step of 2 tasks", "hydra/launcher=slurm", "srun torchrun"],
        env={"SLURM_NTASKS": "2"},
        creates_no_run=True,
    ),
    "a rank fails (2 ranks, bptt larger than the data)": Case(
        ["train", "experiment=ptb_tiny", "task.bptt=100000", "trainer.devices=2", "device=cpu"],
        2,
        ["of 2 failed", "task.bptt=100000 is larger", "marked FAILED"],
        setup="shared_corpus",
    ),
}


def shared_corpora() -> Path:
    from conftest import shared_datasets_dir

    found = shared_datasets_dir()
    if found is None:
        pytest.skip("the shared corpora (../shared/datasets) are not present")
    return found


def corpus_copy(workdir: Path, name: str) -> Path:
    """A fresh data root holding a copy of one shared corpus."""
    import shutil

    root = workdir / f"data-{name}"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(shared_corpora() / name, root / name)
    return root


def setup_no_data(workdir: Path) -> dict[str, str]:
    (workdir / "no-data").mkdir(exist_ok=True)
    return {"RNNLAB_DATA": str(workdir / "no-data")}


def setup_shared_corpus(workdir: Path) -> dict[str, str]:
    return {"RNNLAB_DATA": str(shared_corpora())}


def setup_edited_corpus(workdir: Path) -> dict[str, str]:
    root = corpus_copy(workdir, "ptb")
    with (root / "ptb" / "ptb.train.txt").open("a") as handle:
        handle.write(" an extra line\n")
    return {"RNNLAB_DATA": str(root)}


def setup_empty_corpus(workdir: Path) -> dict[str, str]:
    root = corpus_copy(workdir, "ptb")
    (root / "ptb" / "ptb.valid.txt").write_bytes(b"")
    return {"RNNLAB_DATA": str(root)}


def setup_invalid_utf8_corpus(workdir: Path) -> dict[str, str]:
    root = corpus_copy(workdir, "ptb")
    (root / "ptb" / "ptb.test.txt").write_bytes(b"the \xff\xfe market\n")
    return {"RNNLAB_DATA": str(root)}


def setup_truncated_gzip(workdir: Path) -> dict[str, str]:
    root = corpus_copy(workdir, "multi30k")
    path = root / "multi30k" / "train.de.gz"
    path.write_bytes(path.read_bytes()[:5000])
    return {"RNNLAB_DATA": str(root)}


def setup_bad_cell(workdir: Path) -> dict[str, str]:
    (workdir / "bad_cell.py").write_text(BAD_CELL)
    return {"PYTHONPATH": str(workdir)}


def setup_empty_dir(workdir: Path) -> dict[str, str]:
    (workdir / "empty").mkdir(exist_ok=True)
    return {}


def setup_corrupt_source(workdir: Path) -> dict[str, str]:
    corrupt = workdir / "corrupt"
    corrupt.mkdir(exist_ok=True)
    for name in ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"):
        (corrupt / name).write_bytes(b"not \xff the corpus\n")
    return {}


def artifact_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def all_run_ids(client) -> set[str]:
    experiments = [e.experiment_id for e in client.search_experiments()]
    return {r.info.run_id for r in client.search_runs(experiments, max_results=10_000)}


@pytest.fixture(scope="module")
def earlier(tmp_path_factory, empty_store):
    """A finished run whose record and files every bad input must leave alone."""
    workdir = tmp_path_factory.mktemp("bad-inputs")
    new_store(workdir, empty_store)
    result = cli_inprocess("train", "trainer.max_epochs=5", "device=cpu", cwd=workdir)
    assert result.returncode == 0, result.stderr
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    (run,) = runs_of(client, "bitcount")
    return workdir, client, run, artifact_digest(workdir / "mlartifacts")


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, earlier):
    workdir, client, run, digest = earlier
    case = CASES[name]
    if case.skip_if == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    env = {**case.env, **(globals()[f"setup_{case.setup}"](workdir) if case.setup else {})}
    runs_before = all_run_ids(client)
    result = cli_inprocess(*case.args, cwd=workdir, env=env)
    assert result.returncode == case.code, result.stderr
    err = result.stderr
    assert "Traceback" not in err
    for fragment in case.says:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    if result.returncode != 1:  # our own errors: one paragraph on one line
        lines = [line for line in err.splitlines() if line.startswith("rnnlab: error:")]
        assert len(lines) == 1, err
    if case.creates_no_run:
        assert all_run_ids(client) == runs_before
    # the earlier run is untouched
    again = client.get_run(run.info.run_id)
    assert again.info.status == "FINISHED"
    assert again.data.metrics == run.data.metrics
    assert again.data.params == run.data.params
    current = artifact_digest(workdir / "mlartifacts")
    assert {k: v for k, v in current.items() if k in digest} == digest
    assert not (workdir / "fetched" / "ptb").exists() or not any(
        (workdir / "fetched" / "ptb").iterdir()
    )


def test_debug_shows_the_traceback_for_the_same_error(earlier):
    workdir = earlier[0]
    result = cli_inprocess("--debug", "train", "device=tpu", cwd=workdir)
    assert result.returncode != 0
    assert "Traceback" in result.stderr


def mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
    )
    return done.returncode == 0


@pytest.fixture
def mounted(tmp_path):
    mounts: list[Path] = []

    def make(name: str, options: str) -> Path:
        target = tmp_path / name
        if os.geteuid() != 0 or not mount_tmpfs(target, options):
            pytest.skip("needs root and tmpfs mounts to build a real read-only or full filesystem")
        mounts.append(target)
        return target

    yield make
    for target in mounts:
        subprocess.run(["umount", "-l", str(target)], check=False)


# The two filesystem tests run a real process: the mounts are what the process sees.
def test_read_only_working_directory(mounted):
    readonly = mounted("ro", "ro,size=1m")
    result = run_cli("train", *FAST, cwd=readonly)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "not writable" in result.stderr and "tracking.uri" in result.stderr


def test_full_disk_fails_clearly_and_keeps_the_run_record(mounted, tmp_path):
    small = mounted("full", "size=3m")
    # a 1M-parameter LSTM: its checkpoint cannot fit in what is left of 3 MB
    result = run_cli(
        "train",
        "cell=lstm",
        "cell.hidden_size=512",
        "trainer.max_epochs=1",
        "device=cpu",
        cwd=small,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "Could not write the checkpoint" in result.stderr and "MB free" in result.stderr
    assert "Free disk space" in result.stderr
    leftovers = [p for p in small.rglob("*.pt*") if p.name.startswith(".")]
    assert leftovers == []  # no half-written temp checkpoint
