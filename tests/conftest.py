"""Shared fixtures: a real sqlite MLflow store in a temp dir, real Hydra composition, the CLI
run in-process (:func:`cli_inprocess`) or as a subprocess exactly as a user runs it
(:func:`run_cli`), and one trained tiny run per corpus task, shared by the tests that only
read it."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RNNLAB = [sys.executable, "-m", "rnnlab.cli"]


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests skip themselves, saying why, where torch sees no CUDA device."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; torch.cuda.is_available() is False here")
    for item in gpu_items:
        item.add_marker(skip)


def cpu_runs_bf16_lstm() -> bool:
    """Whether this CPU's oneDNN runs the fused LSTM under bfloat16 autocast: CPUs without
    AVX512-BF16/AMX (and without AVX-512 at all) refuse the primitive outright."""
    import torch

    lstm = torch.nn.LSTM(4, 4)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lstm(torch.zeros(2, 1, 4))
    except RuntimeError:
        return False
    return True


#: for tests of the bf16 LSTM on the CPU; they skip, saying why, where oneDNN cannot run it
needs_cpu_bf16_lstm = pytest.mark.skipif(
    not cpu_runs_bf16_lstm(),
    reason="this CPU's oneDNN cannot run the LSTM under bf16 autocast (no AVX512-BF16/AMX)",
)


def shared_datasets_dir() -> Path | None:
    """The corpora copy for tests: $RNNLAB_TEST_DATA, else ../shared/datasets beside the repo."""
    candidate = Path(os.environ.get("RNNLAB_TEST_DATA", ROOT.parent / "shared" / "datasets"))
    return candidate if candidate.is_dir() else None


@pytest.fixture(scope="session", autouse=True)
def token_cache(tmp_path_factory) -> Path:
    """Tokenised corpora are cached in a session temp dir ($RNNLAB_CACHE), not ~/.cache."""
    folder = tmp_path_factory.mktemp("token-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RNNLAB_CACHE", str(folder))
        yield folder


@pytest.fixture
def shared_data(monkeypatch) -> Path:
    """Point RNNLAB_DATA at the shared corpora (skip, saying why, if they are absent)."""
    path = shared_datasets_dir()
    if path is None:
        pytest.skip("the shared corpora (../shared/datasets or $RNNLAB_TEST_DATA) are not present")
    monkeypatch.setenv("RNNLAB_DATA", str(path))
    return path


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A temp working directory with its own sqlite store; no MLFLOW_* leakage."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return tmp_path


@pytest.fixture
def store_uri(workdir) -> str:
    return f"sqlite:///{workdir / 'mlflow.db'}"


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An empty sqlite store as MLflow itself creates it (its schema migrations take seconds
    per store), made once per session; ``client`` starts each test's store as a copy. It keeps
    sqlite's default journal mode: switching a store to WAL is rnnlab's job, and tested."""
    import sqlite3

    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("empty-store")
    db = folder / "mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    return db


def new_store(folder: Path, empty_store: Path) -> str:
    """``folder/mlflow.db`` as a fresh copy of ``empty_store`` (the tables MlflowClient creates
    in a new sqlite file); its URI. For stores a test reads and writes but whose creation it
    does not check (the tests that do let rnnlab create theirs)."""
    import shutil

    db = folder / "mlflow.db"
    shutil.copyfile(empty_store, db)
    return f"sqlite:///{db}"


@pytest.fixture
def client(workdir, empty_store):
    """An MlflowClient on the test's store, which exists from the start (``new_store``)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=new_store(workdir, empty_store))


def compose(overrides: list[str]):
    """Compose the real config tree with Hydra, as ``rnnlab train`` would."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from rnnlab.paths import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


def train(overrides: list[str]) -> float:
    """Run one training job in-process from composed config (no Hydra runtime)."""
    from rnnlab.session.run import run_job

    return run_job(compose(overrides))


def override_value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def task_from_config(name: str, **options):
    """Task ``name`` with its YAML defaults and ``options`` over them, as compose builds it."""
    from rnnlab.compose.build import build_task

    overrides = [f"task.{k}={override_value(v)}" for k, v in options.items()]
    return build_task(compose([f"task={name}", *overrides]).task, progress=False)


def yaml_defaults(path: str) -> dict:
    import yaml

    from rnnlab.paths import config_dir

    return yaml.safe_load((config_dir() / path).read_text())


def stack_spec(cell, hidden_sizes, **options):
    """A StackSpec with the stack keys of conf/cell_base/stack.yaml and ``options`` over them."""
    from rnnlab.models.blocks import BlockSpec
    from rnnlab.models.stack import StackSpec

    base = yaml_defaults("cell_base/stack.yaml")
    keys = ("dropout", "bidirectional", "locked_dropout", "zoneout", "compile", "compile_chunk")
    values = {k: base[k] for k in (*keys, "scan", "scan_chunk")}
    block = {k: base[k] for k in ("residual", "pre_norm", "ffn", "ffn_mult")}
    block.update({k: options.pop(k) for k in list(options) if k in block})
    values.update(options)
    return StackSpec(
        cell=cell, hidden_sizes=tuple(hidden_sizes), name="test", block=BlockSpec(**block), **values
    )


def fused_cell(cls, **options):
    """A fused-kernel cell factory with the layer keys of conf/cell_base/fused_layer.yaml."""
    from functools import partial

    return partial(cls, **{**yaml_defaults("cell_base/fused_layer.yaml"), **options})


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300):
    """Run ``rnnlab ARGS`` in a subprocess; returns the CompletedProcess (text). For what
    needs a real process; everything else uses :func:`cli_inprocess` (same result shape)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    full_env.update(env or {})
    return subprocess.run(
        [*RNNLAB, *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class InProcessResult(subprocess.CompletedProcess):
    """What :func:`cli_inprocess` returns: shaped like ``run_cli``'s CompletedProcess."""


def _exit_status(exc: SystemExit, stderr) -> int:
    """The exit status Python gives a process that raised ``exc`` (``sys.exit`` semantics)."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=stderr)
    return 1


def _pythonpath_entries(env: dict[str, str]) -> list[str]:
    value = env.get("PYTHONPATH", "")
    return [entry for entry in value.split(os.pathsep) if entry]


@contextlib.contextmanager
def _process_state(cwd: Path, env: dict[str, str], stdin: str | None):
    """Run the body as if in a fresh ``rnnlab`` process started in ``cwd`` with ``env``, and
    put back everything a command changes process-wide: the working directory, os.environ
    (``--debug`` sets RNNLAB_DEBUG, ``rnnlab runs`` sets MLFLOW_TRACKING_URI through
    ``mlflow.set_tracking_uri``), sys.argv and sys.path, the standard streams, the root
    logger (Hydra configures it per job, with a file handler in the run's output dir), Hydra's
    singletons, MLflow's global tracking URI and torch's thread count (``rnnlab bench``)."""
    import logging

    import torch
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from mlflow.tracking._tracking_service import utils as mlflow_uri

    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    saved_modules = set(sys.modules)
    saved_streams = sys.stdin, sys.stdout, sys.stderr
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_threads = torch.get_num_threads()
    saved_uri = mlflow_uri._tracking_uri
    extra_path = _pythonpath_entries(env)
    try:
        for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
            del os.environ[key]
        os.environ.update(env)
        sys.path[:0] = extra_path  # what PYTHONPATH does for a new interpreter
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None
        os.chdir(cwd)
        sys.argv = ["rnnlab"]
        sys.stdin = io.StringIO(stdin or "")
        yield
    finally:
        os.chdir(saved_cwd)
        sys.stdin, sys.stdout, sys.stderr = saved_streams
        sys.argv, sys.path[:] = saved_argv, saved_path
        if extra_path:  # modules the command imported from PYTHONPATH go with it
            for name in set(sys.modules) - saved_modules:
                origin = getattr(sys.modules[name], "__file__", None) or ""
                if any(origin.startswith(entry) for entry in extra_path):
                    del sys.modules[name]
        for handler in root.handlers:
            if handler not in saved_handlers:
                handler.close()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None
        if mlflow_uri._tracking_uri != saved_uri:
            mlflow_uri.set_tracking_uri(saved_uri)
        os.environ.clear()
        os.environ.update(saved_env)
        torch.set_num_threads(saved_threads)


def _stream() -> io.TextIOWrapper:
    """A text stream like a pipe's: UTF-8, with a binary buffer, not a terminal."""
    return io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline="", write_through=True)


def _read(stream: io.TextIOWrapper) -> str:
    return stream.buffer.getvalue().decode("utf-8")


def cli_inprocess(
    *args: str, cwd: Path, env: dict | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess:
    """Run ``rnnlab ARGS`` in this process, as :func:`run_cli` runs it in a new one: the real
    click group, Hydra and MLflow, the same environment rules (MLFLOW_* dropped, ``env``
    over it), the exit status Python would give the process, and its stdout and stderr.

    An exception that escapes the command is what the interpreter would print: its traceback
    on stderr, exit status 1. Use :func:`run_cli` where a real process matters (signals,
    atexit handlers, import cost, launchers that spawn workers, exec, what the OS lets the
    process do). Under a debugger or tracer (``sys.gettrace()``), Hydra re-raises a job's
    errors instead of printing them, so the error-message tests need an untraced run."""
    from rnnlab.cli import cli

    out, err = _stream(), _stream()
    with _process_state(Path(cwd), dict(env or {}), stdin):
        sys.stdout, sys.stderr = out, err
        try:
            cli.main(list(args), prog_name="rnnlab", standalone_mode=True)
            code = 0
        except SystemExit as exc:
            code = _exit_status(exc, err)
        except KeyboardInterrupt:
            raise
        except BaseException:
            traceback.print_exc(file=err)  # the interpreter's report of an uncaught error
            code = 1
        finally:
            out.flush()
            err.flush()
    return InProcessResult([*RNNLAB, *args], code, _read(out), _read(err))


def runs_of(client, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment} was not created"
    return client.search_runs([exp.experiment_id], max_results=1000)


@contextlib.contextmanager
def run_env(workdir: Path, data: Path | None = None):
    """What the ``workdir`` fixture sets up, for session- and module-scoped runs."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        if data is not None:
            mp.setenv("RNNLAB_DATA", str(data))
        mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        yield


def train_shared_run(
    tmp_path_factory, empty_store: Path, overrides: list[str], *, experiment: str, data: bool
) -> dict:
    """One real run of ``overrides`` (on the shared corpora if ``data``), in its own temp
    sqlite store, ``mlflow.db`` in ``workdir``."""
    root = shared_datasets_dir() if data else None
    if data and root is None:
        pytest.skip("the shared corpora (../shared/datasets or $RNNLAB_TEST_DATA) are not present")
    workdir = tmp_path_factory.mktemp(experiment)
    uri = new_store(workdir, empty_store)
    with run_env(workdir, root):
        train([*overrides, "device=cpu", f"tracking.uri={uri}"])
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    (run,) = runs_of(client, experiment)
    return {"run": run, "client": client, "uri": uri, "workdir": workdir, "data": root}


@pytest.fixture(scope="session")
def bitcount_run(tmp_path_factory, empty_store) -> dict:
    """One finished 3-epoch bitcount run, trained once per session; for tests that only read
    its store (the UI serving it, the runs table). A test that writes to a store has its own."""
    return train_shared_run(
        tmp_path_factory, empty_store, ["trainer.max_epochs=3"], experiment="bitcount", data=False
    )


@pytest.fixture(scope="session")
def ptb_tiny_run(tmp_path_factory, empty_store) -> dict:
    """One ptb_tiny run, trained once per session; for tests that only read it (its store,
    metrics and artifacts, eval, generate). A test that writes to a store trains its own."""
    return train_shared_run(
        tmp_path_factory, empty_store, ["experiment=ptb_tiny"], experiment="ptb", data=True
    )


@pytest.fixture(scope="session")
def multi30k_tiny_run(tmp_path_factory, empty_store) -> dict:
    """One multi30k_tiny run, trained once per session; for tests that only read it."""
    return train_shared_run(
        tmp_path_factory,
        empty_store,
        ["experiment=multi30k_tiny"],
        experiment="translate",
        data=True,
    )
