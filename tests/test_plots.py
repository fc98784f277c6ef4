"""`rnnlab plot` and `rnnlab landscape` on real runs: real PNGs, checked by opening them, and
a landscape whose surface is the very loss the runs logged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import cli_inprocess, new_store, runs_of, train

EPOCHS = 12
BF16_EPOCHS = 4


@pytest.fixture(scope="module")
def store(tmp_path_factory, empty_store) -> tuple[Path, str]:
    """SGD and RMSProp runs of the two-weight Elman cell (same seed, same data), a short
    RMSProp run of it in bf16, and an LSTM, in one store shared by this module's tests."""
    root = tmp_path_factory.mktemp("plots")
    uri = new_store(root, empty_store)
    common = [f"tracking.uri={uri}", "device=cpu"]
    train(["optim=sgd", "optim.lr=1e-5", f"trainer.max_epochs={EPOCHS}", *common])
    train(["optim=rmsprop", "optim.lr=1e-2", f"trainer.max_epochs={EPOCHS}", *common])
    # bf16 matrix products run on any CPU (emulated, slowly, without AVX512-BF16): 4 epochs
    bf16 = ["trainer.precision=bf16", f"trainer.max_epochs={BF16_EPOCHS}"]
    train(["optim=rmsprop", "optim.lr=1e-2", *bf16, *common])
    train(["cell=lstm", "trainer.max_epochs=2", *common])
    return root, uri


@pytest.fixture
def workdir(store, monkeypatch) -> Path:
    root, uri = store
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return root


@pytest.fixture
def client(store):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=store[1])


@pytest.fixture
def elman_runs(client) -> dict[str, str]:
    def key(params: dict[str, str]) -> str:
        bf16 = "-bf16" if params["trainer.precision"] == "bf16" else ""
        return f"{params['optim.name']}-{params['cell.name']}{bf16}"

    return {key(r.data.params): r.info.run_id for r in runs_of(client, "bitcount")}


def uri_env(workdir: Path) -> dict[str, str]:
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}"}


def assert_real_png(path: Path, *, min_width: int, min_height: int) -> np.ndarray:
    import matplotlib.image

    assert path.is_file() and path.stat().st_size > 10_000, path
    image = matplotlib.image.imread(path)  # (H, W, 4) floats in [0, 1]
    height, width = image.shape[:2]
    assert width >= min_width and height >= min_height, image.shape
    rgb = image[..., :3].reshape(-1, 3)
    assert rgb.std() > 0.05, "the image is blank"
    assert len(np.unique(np.round(rgb * 255), axis=0)) > 50, "too few colours: nothing drawn"
    return image


def test_plot_overlays_learning_curves(workdir, elman_runs):
    ids = [elman_runs["sgd-elman"], elman_runs["rmsprop-elman"], elman_runs["rmsprop-lstm"]]
    done = cli_inprocess("plot", *ids, "--out", "curves.png", cwd=workdir, env=uri_env(workdir))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str((workdir / "curves.png").resolve())
    assert_real_png(workdir / "curves.png", min_width=600, min_height=400)


def test_plot_default_name_and_errors(workdir, elman_runs):
    from click.testing import CliRunner

    from rnnlab.cli import cli

    run_id = elman_runs["sgd-elman"]
    result = CliRunner().invoke(cli, ["plot", run_id, "--metric", "val/loss"])
    assert result.exit_code == 0, result.output
    expected = workdir / f"plot-val_loss-{run_id[:8]}.png"
    assert result.stdout.strip() == str(expected.resolve())
    assert_real_png(expected, min_width=600, min_height=400)

    missing = CliRunner().invoke(cli, ["plot", run_id, "--metric", "val/ppl"])
    assert missing.exit_code == 2
    assert "has no metric 'val/ppl'" in missing.stderr and "train/loss" in missing.stderr
    unknown = CliRunner().invoke(cli, ["plot", "0123456789abcdef"])
    assert unknown.exit_code == 2 and "there is no run with that id" in unknown.stderr


def test_landscape_draws_paths_and_logs_the_png_to_each_run(workdir, client, elman_runs):
    ids = [elman_runs["sgd-elman"], elman_runs["rmsprop-elman"]]
    done = cli_inprocess("landscape", *ids, cwd=workdir, env=uri_env(workdir))
    assert done.returncode == 0, done.stderr
    path = Path(done.stdout.strip())
    assert path == (workdir / f"landscape-{ids[0][:8]}+1.png").resolve()
    assert_real_png(path, min_width=600, min_height=450)
    for run_id in ids:
        logged = [a.path for a in client.list_artifacts(run_id, "plots")]
        assert "plots/landscape.png" in logged


def test_landscape_refuses_other_cells(workdir, elman_runs):
    from click.testing import CliRunner

    from rnnlab.cli import cli

    lstm = elman_runs["rmsprop-lstm"]
    result = CliRunner().invoke(cli, ["landscape", lstm, elman_runs["sgd-elman"]])
    assert result.exit_code == 2
    assert "only bitcount runs with the elman cell" in result.stderr
    assert "its cell is lstm, not elman" in result.stderr
    assert not (workdir / f"landscape-{lstm[:8]}+1.png").exists()


def test_landscape_surface_is_the_loss_the_run_logged(workdir, client, elman_runs):
    """The surface at the weights after epoch e-1 equals the full-batch train/loss of epoch e:
    the training set rebuilt from the run's params is the one it trained on."""
    from rnnlab.analysis.history import load_runs
    from rnnlab.analysis.landscape import sse_surface, trained_precision, training_set, trajectory

    (run,) = load_runs([elman_runs["sgd-elman"]], uri=client.tracking_uri)
    assert trained_precision(run) == "fp32"  # auto: bitcount trains in fp32 on any machine
    x, y = training_set(run)
    path = trajectory(run)
    assert len(path.w_x) == EPOCHS + 1  # the initial weights, then one point per epoch
    assert (path.w_x[0], path.w_rec[0]) == (1.2, 1.2)
    predicted = sse_surface(x, y, path.w_x[:-1], path.w_rec[:-1], trained_precision(run))
    logged = np.array([v for _, v in run.history("train/loss")])
    np.testing.assert_allclose(predicted, logged, rtol=1e-4)
    assert sse_surface(x, y, np.array(1.0), np.array(1.0)) == pytest.approx(0.0, abs=1e-9)


def test_a_bf16_run_s_surface_is_its_bf16_loss_and_the_plot_says_so(client, elman_runs):
    """A run trained in bf16: the surface in bf16 is the train/loss it logged (the fp32 one
    is not), its val/loss is the fp32 loss (evaluation stays fp32), and the figure says which
    precision the surface is in and marks the run."""
    import matplotlib.pyplot as plt
    from conftest import task_from_config

    from rnnlab.analysis.history import load_runs
    from rnnlab.analysis.landscape import (
        landscape_figure,
        sse_surface,
        trained_precision,
        training_set,
        trajectory,
    )

    ids = [elman_runs["rmsprop-elman-bf16"], elman_runs["rmsprop-elman"]]
    bf16_run, fp32_run = load_runs(ids, uri=client.tracking_uri)
    assert (trained_precision(bf16_run), trained_precision(fp32_run)) == ("bf16", "fp32")
    x, y = training_set(bf16_run)
    path = trajectory(bf16_run)
    assert len(path.w_x) == BF16_EPOCHS + 1
    before = (path.w_x[:-1], path.w_rec[:-1])  # the weights each epoch's loss was taken at
    logged = np.array([v for _, v in bf16_run.history("train/loss")])
    np.testing.assert_allclose(sse_surface(x, y, *before, "bf16"), logged, rtol=1e-6)
    assert not np.allclose(sse_surface(x, y, *before, "fp32"), logged, rtol=1e-3)
    x_val, y_val = task_from_config("bitcount").splits["val"]  # (T, n, 1), (n,)
    x_val, y_val = x_val.squeeze(-1).double().numpy(), y_val.double().numpy()
    after = (path.w_x[1:], path.w_rec[1:])  # the weights each epoch's evaluation saw
    val = np.array([v for _, v in bf16_run.history("val/loss")])
    np.testing.assert_allclose(sse_surface(x_val, y_val, *after, "fp32"), val, rtol=1e-5)

    def texts(fig) -> tuple[str, list[str]]:
        (ax, _colorbar) = fig.axes
        return ax.get_title(), [t.get_text() for t in ax.get_legend().get_texts()]

    alone, mixed = landscape_figure([bf16_run]), landscape_figure([fp32_run, bf16_run])
    try:
        title, legend = texts(alone)
        assert title.endswith("loss surface in bf16")
        assert legend[0] == f"{bf16_run.label} [trained in bf16]"
        title, legend = texts(mixed)  # one training set: one panel, one surface, in fp32
        assert title.endswith("loss surface in fp32")
        assert legend[:2] == [fp32_run.label, f"{bf16_run.label} [trained in bf16]"]
        assert mixed.axes[1].get_ylabel().endswith("computed in fp32")
    finally:
        plt.close(alone)
        plt.close(mixed)
