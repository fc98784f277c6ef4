"""bitcount end to end on a real sqlite store, and the classic two-weight result."""

from __future__ import annotations

import pytest
from conftest import force_fast_bf16, runs_of, train

CELLS = ["elman", "rnn_tanh", "rnn_relu", "lstm", "gru"]
OPTIMS = ["sgd", "rmsprop", "adam"]


#: ``make test`` trains each cell once and each optimizer at least once (cells and
#: optimizers are independent config groups; the special SGD rate of the Elman cell is one of
#: them); ``make test-all`` trains all fifteen pairs
PAIRS = {("elman", "sgd"), ("rnn_tanh", "adam"), ("rnn_relu", "rmsprop"), ("lstm", "sgd"),
         ("gru", "adam")}  # fmt: skip


@pytest.mark.parametrize(
    ("cell", "optim"),
    [
        pytest.param(cell, optim, marks=() if (cell, optim) in PAIRS else pytest.mark.slow)
        for cell in CELLS
        for optim in OPTIMS
    ],
)
def test_each_cell_and_optimizer_trains_and_is_tracked(cell, optim, workdir, client):
    lr = "1e-5" if (cell, optim) == ("elman", "sgd") else "1e-3"
    train(
        [f"cell={cell}", f"optim={optim}", f"optim.lr={lr}", "trainer.max_epochs=3", "device=cpu"]
    )
    (run,) = runs_of(client, "bitcount")
    assert run.info.status == "FINISHED"
    assert run.data.params["cell.name"] == cell
    assert run.data.params["optim.name"] == optim
    assert float(run.data.params["optim.lr"]) == float(lr)
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [1, 2, 3]
    for key in ("val/loss", "test/loss", "test_long/loss"):
        assert key in run.data.metrics
    assert run.info.run_name == f"{cell}-{optim}-lr{lr}"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "checkpoints", "plots"} <= artifacts
    if cell == "elman":
        assert len(client.get_metric_history(run.info.run_id, "elman/w_x")) == 3
        assert len(client.get_metric_history(run.info.run_id, "elman/w_rec")) == 3


@pytest.mark.parametrize("verdict", ["amx", pytest.param("cuda", marks=pytest.mark.slow)])
def test_rmsprop_reproduces_the_classic_result(workdir, client, monkeypatch, verdict):
    """At the default precision, on hardware where bf16 is fast (forced: an AMX CPU, or an
    Ampere GPU's verdict), the demo still trains in fp32 and reaches the seed demo's figure:
    in bf16 it ended at train/loss 0.0225 with weights 0.005 off (issue 31)."""
    force_fast_bf16(monkeypatch, verdict)
    train(["experiment=bitcount_rmsprop", "device=cpu"])
    (run,) = runs_of(client, "bitcount")
    assert run.data.params["trainer.precision"] == "auto"
    assert run.data.tags["precision"] == "fp32"
    assert run.data.tags["precision_reason"].startswith("auto, task rule: task bitcount needs")
    metrics = run.data.metrics
    assert metrics["train/loss"] < 0.0068  # the preset's reference figure
    assert abs(metrics["elman/w_x"] - 1.0) < 0.001
    assert abs(metrics["elman/w_rec"] - 1.0) < 0.001
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 2000


def test_sgd_reduces_the_loss_but_crawls(workdir, client):
    train(["experiment=bitcount_sgd", "trainer.max_epochs=500", "device=cpu"])
    (run,) = runs_of(client, "bitcount")
    history = [m.value for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert len(history) == 500
    assert history[-1] < history[0] / 100  # it does learn ...
    assert history[-1] > 0.1  # ... but has not converged by epoch 500
    assert abs(run.data.metrics["elman/w_x"] - 1.0) > 0.05


def test_same_seed_same_data_same_curve(workdir, client):
    for _ in range(2):
        train(["cell=gru", "trainer.max_epochs=5", "seed=7", "device=cpu"])
    first, second = runs_of(client, "bitcount")
    curves = [
        [m.value for m in client.get_metric_history(r.info.run_id, "train/loss")]
        for r in (first, second)
    ]
    assert curves[0] == curves[1]
    train(["cell=gru", "trainer.max_epochs=5", "seed=8", "device=cpu"])
    third = [r for r in runs_of(client, "bitcount") if r.data.params["seed"] == "8"][0]
    assert [m.value for m in client.get_metric_history(third.info.run_id, "train/loss")] != curves[
        0
    ]
