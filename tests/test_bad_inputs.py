"""The bad-input catalogue: each case exits non-zero with a one-paragraph message naming the
problem and the fix, prints no traceback, and leaves an earlier run untouched."""

from __future__ import annotations

import contextlib
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
    #: refused by click while parsing the options: click's own "Error: Invalid value ..."
    click_usage: bool = False


FAST = ["trainer.max_epochs=2", "device=cpu"]
TINY_MT = ["train", "experiment=multi30k_tiny", "device=cpu"]
#: task=lm at its smallest (its data come from the setup functions)
LM = ["task=lm", "cell.hidden_size=8", "task.batch_size=2", "task.eval_batch_size=2"]
LM += ["task.bptt=4", "trainer.max_epochs=1", "device=cpu"]
LM_TEXT = "the cat sat on the mat\nthe dog sat on the log\n" * 20
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
        ["trainer.precision must be one of auto, fp32, bf16, got 'fp16'", "trainer.*"],
    ),
    "bad thread count": Case(
        ["train", "trainer.threads=0", *FAST],
        2,
        ["trainer.threads must be auto or a positive integer, got '0'", "trainer.*"],
        creates_no_run=True,
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
    "rerun unknown run": Case(
        ["train", "rerun=feedbeef", "device=cpu"],
        2,
        ["rerun=feedbeef: there is no run with that id", "rnnlab runs"],
        creates_no_run=True,
    ),
    "rerun and resume together": Case(
        ["train", "rerun=feedbeef", "resume=feedbeef"],
        2,
        ["rerun= and resume= were both given", "resume=RUN_ID to continue"],
        creates_no_run=True,
    ),
    "register without logging the model": Case(
        ["train", "tracking.log_model=false", "tracking.register_model=m", *FAST],
        2,
        ["tracking.register_model needs tracking.log_model=true", "tracking.*"],
        creates_no_run=True,
    ),
    "unknown scan path": Case(
        ["train", "cell=mingru", "cell.scan=fast", *FAST],
        2,
        ["cell.scan must be one of auto, parallel, sequential, got 'fast'", "cell.*"],
        creates_no_run=True,
    ),
    "LRU ring upside down": Case(
        ["train", "cell=lru", "cell.layer.r_min=0.99", "cell.layer.r_max=0.9", *FAST],
        2,
        ["r_min < r_max < 1, got r_min=0.99, r_max=0.9", "set cell.layer.r_min below"],
        creates_no_run=True,
    ),
    "bidirectional decoder": Case(
        ["train", "task=translate", "cell=lru", "cell.bidirectional=true", *FAST],
        2,
        ["cell.bidirectional=true does not fit the translate task", "Drop cell.bidirectional"],
        creates_no_run=True,
    ),
    "reference without a value": Case(
        ["train", "+reference.metric=val/loss", "+reference.source=x", *FAST],
        2,
        ["reference.value has no value", "reference.value=..."],
        creates_no_run=True,
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
    "unreachable tracking server in a sweep": Case(
        ["train", "-m", "tracking.uri=http://127.0.0.1:9", "seed=1,2", *FAST],
        2,
        ["Cannot reach the MLflow tracking server", "nothing was trained"],
        creates_no_run=True,
    ),
    # rnnlab server refuses before starting anything; a client's missing or wrong password
    # needs a live server with auth: tests/test_server.py
    "server on a non-database store": Case(
        ["server", "--backend-store-uri", "file:///tmp/mlruns"],
        2,
        ["is not a database URI", "postgresql://", "sqlite:///"],
    ),
    "server on PostgreSQL without an artifact destination": Case(
        ["server", "--backend-store-uri", "postgresql://team@127.0.0.1:9/mlflow"],
        2,
        ["needs --artifacts-destination", "--artifacts-destination /shared/mlartifacts"],
    ),
    "server auth without an admin password": Case(
        ["server", "--backend-store-uri", "sqlite:///server.db", "--auth"],
        2,
        ["MLFLOW_AUTH_ADMIN_PASSWORD is not set", "never put a password on the command line"],
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
        creates_no_run=True,
    ),
    "checksum mismatch": Case(
        ["train", "experiment=ptb_tiny", "device=cpu"],
        2,
        ["Checksum mismatch for", "expected sha256", "rnnlab data fetch ptb"],
        setup="edited_corpus",
        creates_no_run=True,
    ),
    "empty corpus file": Case(
        ["train", "experiment=ptb_tiny", "device=cpu"],
        2,
        ["Checksum mismatch for", "ptb.valid.txt", "delete it"],
        setup="empty_corpus",
        creates_no_run=True,
    ),
    "corpus with invalid UTF-8": Case(
        ["train", "experiment=ptb_tiny", "device=cpu"],
        2,
        ["Checksum mismatch for", "ptb.test.txt"],
        setup="invalid_utf8_corpus",
        creates_no_run=True,
    ),
    "truncated gzip": Case(
        ["train", "experiment=multi30k_tiny", "device=cpu"],
        2,
        ["Checksum mismatch for", "train.de.gz", "rnnlab data fetch multi30k"],
        setup="truncated_gzip",
        creates_no_run=True,
    ),
    "tracking store that is not a database": Case(
        ["train", "tracking.uri=sqlite:///notes.db", *FAST],
        2,
        ["notes.db, which is not a sqlite database", "tracking.uri"],
        setup="not_a_database",
        creates_no_run=True,
    ),
    "runs on a file that is not a database": Case(
        ["runs", "--uri", "sqlite:///notes.db"],
        2,
        ["not a sqlite database", "--uri"],
        setup="not_a_database",
    ),
    "legacy file store": Case(
        ["train", "tracking.uri=file:///tmp/rnnlab-legacy-mlruns", *FAST],
        2,
        ["legacy file store", "sqlite:///mlflow.db", "migrate-filestore"],
        creates_no_run=True,
    ),
    "runs on a legacy file store": Case(
        ["runs", "--uri", "./mlruns"], 2, ["legacy file store", "sqlite:///mlflow.db"]
    ),
    "another application's sqlite file": Case(
        ["train", "tracking.uri=sqlite:///shop.db", *FAST],
        2,
        ["another application's database (tables: customers)", "left untouched"],
        setup="foreign_database",
        creates_no_run=True,
    ),
    "runs on another application's sqlite file": Case(
        ["runs", "--uri", "sqlite:///shop.db"],
        2,
        ["another application's database", "new file for MLflow"],
        setup="foreign_database",
    ),
    "force without resume": Case(
        ["train", "force=true", *FAST],
        2,
        ["force=true only applies to resume=RUN_ID"],
        creates_no_run=True,
    ),
    "resume a run another process is writing": Case(
        ["train", "resume={RUN_ID}", "device=cpu"],
        2,
        ["being written by process 4242 on elsewhere", "one writer", "force=true"],
        setup="leased_run",
    ),
    "resume a run killed before its first checkpoint": Case(
        ["train", "resume={RUN_ID}", "device=cpu"],
        2,
        ["stopped before its first checkpoint", "marked FAILED", "without resume="],
        setup="uncheckpointed_run",
    ),
    "directory where a corpus file belongs": Case(
        ["train", "experiment=ptb_tiny", "device=cpu"],
        2,
        ["ptb.valid.txt is a directory, where corpus 'ptb' needs its file", "Move that directory"],
        setup="corpus_directory",
        creates_no_run=True,
    ),
    "fetch onto a directory where a corpus file belongs": Case(
        ["data", "fetch", "ptb", "--source", "{SOURCE}", "--data-dir", "clash"],
        2,
        ["ptb.train.txt is a directory, where the corpus file", "nothing was written"],
        setup="fetch_clash",
    ),
    "non-finite option": Case(
        ["generate", "feedbeef", "--temperature", "nan"],
        2,
        ["--temperature", "'nan' is not a finite number"],
        click_usage=True,
    ),
    "out-of-range option": Case(
        ["runs", "--max-results", "0"],
        2,
        ["--max-results", "0 is not in the range"],
        click_usage=True,
    ),
    "server port out of range": Case(
        ["server", "--port", "0"], 2, ["--port", "0 is not in the range"], click_usage=True
    ),
    "output path that is a directory": Case(
        ["plot", "feedbeef", "--out", "."], 2, ["--out", "is a directory"], click_usage=True
    ),
    "bptt larger than the data": Case(
        ["train", "experiment=ptb_tiny", "task.bptt=100000", "device=cpu"],
        2,
        ["task.bptt=100000 is larger than the training data", "task.bptt below"],
        setup="shared_corpus",
        creates_no_run=True,
    ),
    "parallel folder that does not exist": Case(
        [*TINY_MT, "task.corpus=no-such-folder"],
        2,
        ["task.corpus=no-such-folder: there is no folder", "Point task.corpus at a folder"],
    ),
    "parallel folder without the split files": Case(
        [*TINY_MT, "task.corpus=par-names"],
        2,
        ["lacks valid.de[.gz], valid.en[.gz]", "it holds dev.de, dev.en", "task.split_names"],
        setup="parallel_wrong_names",
    ),
    "misaligned parallel files": Case(
        [*TINY_MT, "task.corpus=par-misaligned"],
        2,
        ["not line-aligned", "train.de has 20 lines", "train.en has 19", "same number of lines"],
        setup="parallel_misaligned",
    ),
    "parallel file that is not UTF-8": Case(
        [*TINY_MT, "task.corpus=par-latin1"],
        2,
        ["valid.en is not UTF-8 text: line 3 has an invalid byte", "Convert the file to UTF-8"],
        setup="parallel_latin1",
    ),
    "empty parallel split": Case(
        [*TINY_MT, "task.corpus=par-empty"],
        2,
        ["The test split is empty", "test.de", "at least one sentence pair"],
        setup="parallel_empty",
    ),
    "parallel corpus whose vocabulary is empty": Case(
        [*TINY_MT, "task.corpus=par-good", "task.min_freq=1000"],
        2,
        ["The de vocabulary of par-good is empty", "task.min_freq=1000", "Lower task.min_freq"],
        setup="parallel_good",
    ),
    "sentencepiece vocabulary too large": Case(
        [
            *TINY_MT,
            "task.corpus=par-good",
            "task.tokenizer=sentencepiece",
            "task.spm.vocab_size=100000",
        ],
        2,
        ["task.spm.vocab_size=100000 is larger than", "Set task.spm.vocab_size="],
        setup="parallel_good",
    ),
    "moses tokenizer for a language it does not know": Case(
        [*TINY_MT, "task.src_lang=cs"],
        2,
        ["task.tokenizer=moses knows de, en, fr, not 'cs'", "task.tokenizer=sentencepiece"],
        creates_no_run=True,
    ),
    "eval of a missing source file": Case(
        ["eval", "feedbeef", "--src", "nope.de", "--ref", "nope.en"],
        2,
        ["--src nope.de: there is no such file", "Pass an existing file"],
    ),
    "eval with a source but no reference": Case(
        ["eval", "feedbeef", "--src", "nope.de"], 2, ["--src needs --ref", "--src FILE --ref FILE"]
    ),
    "lm corpus that is neither a folder nor registered": Case(
        ["train", *LM, "task.corpus=no-such-dir"],
        2,
        ["no-such-dir is not a folder, nor a registered corpus (ptb)", "train.txt, valid.txt"],
    ),
    "lm folder without the split files": Case(
        ["train", *LM, "task.corpus=partial"],
        2,
        ["has no valid.txt, test.txt (it holds: notes.md, train.txt)", "task.train=A"],
        setup="partial_lm_folder",
    ),
    "lm file that does not exist": Case(
        ["train", *LM, "task.train=a.txt", "task.valid=b.txt", "task.test=c.txt"],
        2,
        ["a.txt does not exist", "Check the path"],
    ),
    "lm without a corpus": Case(
        ["train", *LM],
        2,
        ["no corpus: set task.corpus=DIR", "task.corpus=ptb", "task.train=..."],
        creates_no_run=True,
    ),
    "lm files half named": Case(
        ["train", *LM, "task.train=a.txt"],
        2,
        ["task.train set but not task.valid, task.test", "name all three files"],
        creates_no_run=True,
    ),
    "server on a database nobody answers at": Case(
        ["server", "--backend-store-uri", "postgresql://rnnlab@127.0.0.1:{PORT}/runs"]
        + ["--artifacts-destination", "artifacts"],
        2,
        ["Cannot reach the backend store postgresql+psycopg://rnnlab@127.0.0.1:", "~/.pgpass"],
        setup="closed_port",
    ),
    "lm train and test named, no validation": Case(
        ["train", *LM, "task.train=a.txt", "task.test=b.txt"],
        2,
        ["task.train, task.test set but not task.valid", "task.valid_fraction=0.1"],
        creates_no_run=True,
    ),
    "lm validation file and valid_fraction both": Case(
        ["train", *LM, "task.train=a", "task.valid=b", "task.test=c", "task.valid_fraction=0.1"],
        2,
        ["task.valid and task.valid_fraction=0.1 are both set"],
        creates_no_run=True,
    ),
    "lm corpus with invalid UTF-8": Case(
        ["train", *LM, "task.corpus=latin1"],
        2,
        ["train.txt is not UTF-8 text: line 3 has the byte 0xe9 at column 8", "iconv"],
        setup="latin1_lm_folder",
    ),
    "lm empty split": Case(
        ["train", *LM, "task.corpus=emptytest"],
        2,
        ["The test split", "test.txt is empty", "Put text in it"],
        setup="empty_test_lm_folder",
    ),
    "lm empty vocabulary": Case(
        ["train", *LM, "task.corpus=lmtext", "task.min_freq=1000"],
        2,
        ["The vocabulary built from", "is empty", "task.min_freq=1000", "Lower task.min_freq"],
        setup="lm_folder",
    ),
    "lm char vocabulary smaller than the alphabet": Case(
        ["train", *LM, "task.corpus=lmtext", "task.level=char", "task.vocab_size=5"],
        2,
        ["task.vocab_size=5 is smaller than the alphabet", "read as <unk>", "at least"],
        setup="lm_folder",
    ),
    "lm adaptive softmax at character level": Case(
        ["train", *LM, "task.corpus=lmtext", "task.level=char", "task.softmax=adaptive"],
        2,
        ["task.softmax=adaptive is for word-level models", "use task.softmax=full"],
        setup="lm_folder",
        creates_no_run=True,
    ),
    "lm cutoffs not increasing": Case(
        ["train", *LM, "task.corpus=lmtext", "task.softmax=adaptive", "task.cutoffs=[6,3]"],
        2,
        ["task.cutoffs=[6, 3] must be positive and strictly increasing", "e.g. [2000, 8000]"],
        setup="lm_folder",
        creates_no_run=True,
    ),
    "lm cutoffs beyond the vocabulary": Case(
        ["train", *LM, "task.corpus=lmtext", "task.softmax=adaptive", "task.cutoffs=[4,40]"],
        2,
        ["must all be below the vocabulary size 9", "task.cutoffs below 9", "null"],
        setup="lm_folder",
        creates_no_run=True,
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
    # bptt 300 fits the 400-token streams one process lays out, not the 200-token streams of
    # each of 2 ranks: the launcher checks the data as rank 0 lays them out, before any run
    # (a rank that fails mid-run: tests/test_distributed.py, the dying-rank test)
    "bptt larger than a rank's shard (2 ranks)": Case(
        ["train", "experiment=ptb_tiny", "task.bptt=300", "trainer.devices=2", "device=cpu"],
        2,
        ["task.bptt=300 is larger", "of 2 ranks' streams", "task.bptt below"],
        setup="shared_corpus",
        creates_no_run=True,
    ),
}


def shared_corpora() -> Path:
    from conftest import fixture_datasets_dir

    return fixture_datasets_dir()


def corpus_copy(workdir: Path, name: str) -> Path:
    """A fresh data root holding a copy of one fixture corpus."""
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


def setup_closed_port(workdir: Path) -> dict[str, str]:
    """A loopback port nothing listens on (bound, read, closed)."""
    import socket

    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return {"PORT": str(sock.getsockname()[1])}


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
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return {"RNNLAB_DATA": str(root)}


def parallel_folder(workdir: Path, name: str, n: int = 20) -> Path:
    """A small de-en folder ``name`` in ``workdir``: n pairs per split, as plain files."""
    import shutil

    folder = workdir / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for stem in ("train", "valid", "test"):
        (folder / f"{stem}.de").write_text("Ein Hund läuft im Park.\n" * n, encoding="utf-8")
        (folder / f"{stem}.en").write_text("A dog runs in the park.\n" * n, encoding="utf-8")
    return folder


def setup_parallel_good(workdir: Path) -> dict[str, str]:
    parallel_folder(workdir, "par-good")
    return {"RNNLAB_CACHE": str(workdir / "cache")}


def setup_parallel_wrong_names(workdir: Path) -> dict[str, str]:
    folder = parallel_folder(workdir, "par-names")
    for lang in ("de", "en"):
        (folder / f"valid.{lang}").rename(folder / f"dev.{lang}")
    return {}


def setup_parallel_misaligned(workdir: Path) -> dict[str, str]:
    folder = parallel_folder(workdir, "par-misaligned")
    (folder / "train.en").write_text("A dog runs in the park.\n" * 19, encoding="utf-8")
    return {}


def setup_parallel_latin1(workdir: Path) -> dict[str, str]:
    folder = parallel_folder(workdir, "par-latin1")
    (folder / "valid.en").write_bytes(b"A dog.\nA cat.\nA caf\xe9.\n" + b"A dog.\n" * 17)
    return {}


def setup_parallel_empty(workdir: Path) -> dict[str, str]:
    folder = parallel_folder(workdir, "par-empty")
    for lang in ("de", "en"):
        (folder / f"test.{lang}").write_text("", encoding="utf-8")


def lm_folder(workdir: Path, name: str, **files: bytes) -> Path:
    """A corpus folder ``workdir/name`` of LM_TEXT splits, ``files`` (e.g. test=b"") over them."""
    folder = workdir / name
    folder.mkdir(exist_ok=True)
    for split in ("train", "valid", "test"):
        (folder / f"{split}.txt").write_bytes(files.get(split, LM_TEXT.encode()))
    return folder


def setup_lm_folder(workdir: Path) -> dict[str, str]:
    lm_folder(workdir, "lmtext")
    return {}


def setup_partial_lm_folder(workdir: Path) -> dict[str, str]:
    folder = workdir / "partial"
    folder.mkdir(exist_ok=True)
    (folder / "train.txt").write_text(LM_TEXT)
    (folder / "notes.md").write_text("my corpus\n")
    return {}


def setup_latin1_lm_folder(workdir: Path) -> dict[str, str]:
    lm_folder(workdir, "latin1", train=b"the cat\nthe dog\nthe caf\xe9 sat\n")
    return {}


def setup_empty_test_lm_folder(workdir: Path) -> dict[str, str]:
    lm_folder(workdir, "emptytest", test=b"\n\n")
    return {}


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


def setup_not_a_database(workdir: Path) -> dict[str, str]:
    (workdir / "notes.db").write_text("shopping list: eggs, milk\n")
    return {}


def setup_foreign_database(workdir: Path) -> dict[str, str]:
    import sqlite3

    (workdir / "shop.db").unlink(missing_ok=True)
    with contextlib.closing(sqlite3.connect(workdir / "shop.db")) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        conn.commit()
    return {}


def store_client(workdir: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")


def setup_leased_run(workdir: Path) -> dict[str, str]:
    """A run whose lease another machine's process holds, refreshed just now."""
    import time

    from rnnlab.tracking.lease import LEASE_TAG, Holder

    client = store_client(workdir)
    exp = client.get_experiment_by_name("bitcount").experiment_id
    lease = Holder("elsewhere", 4242, "f" * 32, time.time(), 30.0).to_tag()
    return {"RUN_ID": client.create_run(exp, tags={LEASE_TAG: lease}).info.run_id}


def setup_uncheckpointed_run(workdir: Path) -> dict[str, str]:
    client = store_client(workdir)
    run = client.create_run(client.get_experiment_by_name("bitcount").experiment_id)
    client.set_terminated(run.info.run_id, status="KILLED")
    return {"RUN_ID": run.info.run_id}


def setup_corpus_directory(workdir: Path) -> dict[str, str]:
    root = corpus_copy(workdir, "ptb")
    (root / "ptb" / "ptb.valid.txt").unlink()
    (root / "ptb" / "ptb.valid.txt").mkdir()
    return {"RNNLAB_DATA": str(root)}


def setup_fetch_clash(workdir: Path) -> dict[str, str]:
    (workdir / "clash" / "ptb" / "ptb.train.txt").mkdir(parents=True, exist_ok=True)
    return {"SOURCE": str(shared_corpora() / "ptb")}


def artifact_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def all_runs(client) -> list:
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, max_results=10_000)


def all_run_ids(client) -> set[str]:
    return {r.info.run_id for r in all_runs(client)}


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
    made = (globals()[f"setup_{case.setup}"](workdir) if case.setup else None) or {}
    env = {**case.env, **made}
    before = all_runs(client)
    runs_before = {r.info.run_id for r in before}
    running_before = {r.info.run_id for r in before if r.info.status == "RUNNING"}
    args = [arg.format(**env) for arg in case.args]  # {RUN_ID}: a run the setup made
    result = cli_inprocess(*args, cwd=workdir, env=env)
    assert result.returncode == case.code, result.stderr
    err = result.stderr
    assert "Traceback" not in err
    for fragment in case.says:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    if result.returncode != 1 and not case.click_usage:  # ours: one paragraph on one line
        lines = [line for line in err.splitlines() if line.startswith("rnnlab: error:")]
        assert len(lines) == 1, err
    after = all_runs(client)
    if case.creates_no_run:
        assert {r.info.run_id for r in after} == runs_before
    # the case leaves no run RUNNING (a setup may hold one on purpose: another live writer)
    running = {r.info.run_id for r in after if r.info.status == "RUNNING"}
    assert running <= running_before
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


def test_a_token_cache_the_disk_cannot_hold_is_refused_before_any_run(mounted, earlier):
    """Ids of 300k tokens need 1.2 MB; the cache is a real 1 MB filesystem."""
    workdir, client, _, _ = earlier
    cache = mounted("cache", "size=1m")
    words = [f"w{i % 97}" for i in range(300_000)]
    lines = [" ".join(words[i : i + 15]) for i in range(0, len(words), 15)]
    folder = lm_folder(workdir, "bigtext", train="\n".join(lines).encode())
    runs_before = all_run_ids(client)
    args = ["train", *LM, f"task.corpus={folder}"]
    result = cli_inprocess(*args, cwd=workdir, env={"RNNLAB_CACHE": str(cache)})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"{folder / 'train.txt'} needs about 2 MB in {cache}" in result.stderr
    assert "RNNLAB_CACHE" in result.stderr
    assert all_run_ids(client) == runs_before
    assert [p.name for p in cache.iterdir() if p.suffix != ".pt"] == []  # no partial ids


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
