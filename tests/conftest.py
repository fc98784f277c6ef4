"""Shared fixtures: a real sqlite MLflow store in a temp dir, real Hydra composition, and
the CLI run as a subprocess exactly as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
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


@pytest.fixture
def client(store_uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=store_uri)


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
    from rnnlab.models.stack import StackSpec

    base = yaml_defaults("cell_base/stack.yaml")
    keys = ("dropout", "bidirectional", "locked_dropout", "zoneout", "compile", "compile_chunk")
    values = {k: base[k] for k in keys}
    values.update(options)
    return StackSpec(cell=cell, hidden_sizes=tuple(hidden_sizes), name="test", **values)


def fused_cell(cls, **options):
    """A fused-kernel cell factory with the layer keys of conf/cell_base/fused_layer.yaml."""
    from functools import partial

    return partial(cls, **{**yaml_defaults("cell_base/fused_layer.yaml"), **options})


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300):
    """Run ``rnnlab ARGS`` in a subprocess; returns the CompletedProcess (text)."""
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


def runs_of(client, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment} was not created"
    return client.search_runs([exp.experiment_id], max_results=1000)
