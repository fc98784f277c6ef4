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
    from rnnlab.app import train_from_config

    return train_from_config(compose(overrides))


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
