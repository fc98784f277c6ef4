"""What rnnlab does differently on CUDA, tested on any machine: torch's fused optimizers
(rnnlab.train.optim), ``trainer.cuda_graphs`` and its reason tag (rnnlab.train.graphs), and
running out of device memory (rnnlab.train.memory), injected at the ``train_step`` fault point
as the ``torch.OutOfMemoryError`` a CUDA allocator raises."""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import cli_inprocess, compose, runs_of

CUDA = torch.device("cuda")  # only named: the decisions below are made from the device


@functools.cache
def optimizer_factory(name: str, *overrides: str):
    """The ``optim`` group composed into its factory (rnnlab.compose.build), as a run gets it."""
    from rnnlab.compose.build import build_optimizer

    return build_optimizer(compose([f"optim={name}", *overrides, "device=cpu"]).optim)


@pytest.mark.parametrize(
    ("optim", "overrides", "device", "fused", "impl"),
    [
        ("adam", [], CUDA, True, "fused (auto: CUDA)"),
        ("sgd", [], CUDA, True, "fused (auto: CUDA)"),
        ("adam", ["optim.fused=false"], CUDA, False, "torch default (foreach on cuda)"),
        ("rmsprop", [], CUDA, None, "torch default (foreach on cuda)"),  # no fused kernel
        ("adam", [], torch.device("cpu"), False, "torch default (for-loop on cpu)"),
        ("sgd", ["optim.fused=true"], torch.device("cpu"), True, "fused (optim.fused=true)"),
    ],
)
def test_fused_optimizers_on_cuda_unless_asked_otherwise(optim, overrides, device, fused, impl):
    from rnnlab.train.optim import make_optimizer

    params = [torch.nn.Parameter(torch.ones(3))]  # torch's fused Adam and SGD run on the CPU too
    optimizer, found = make_optimizer(optimizer_factory(optim, *overrides), params, device)
    assert found == impl
    assert bool(optimizer.defaults.get("fused")) == bool(fused)
    params[0].grad = torch.ones(3)
    optimizer.step()  # it steps
    assert params[0].detach().lt(1).all()


def test_any_optimizer_class_with_a_fused_kernel_gets_it_on_cuda():
    """A user's ``optim._target_`` (Adagrad here) without a ``fused`` key gets torch's fused
    kernel on CUDA too, where the class has one."""
    from rnnlab.train.optim import make_optimizer

    factory = functools.partial(torch.optim.Adagrad, lr=0.1)
    optimizer, impl = make_optimizer(factory, [torch.nn.Parameter(torch.ones(2))], CUDA)
    assert impl == "fused (auto: CUDA)" and optimizer.defaults["fused"]


def test_cuda_graphs_auto_says_why_it_is_off():
    from rnnlab.train.graphs import UNMEASURED, resolve_cuda_graphs

    assert resolve_cuda_graphs("auto", torch.device("cpu"), fixed_shape=True) == (
        False,
        "auto: no CUDA graphs on cpu",
    )
    assert resolve_cuda_graphs("auto", CUDA, fixed_shape=False)[1].startswith("auto: this task")
    assert resolve_cuda_graphs("auto", CUDA, fixed_shape=True) == (False, UNMEASURED)
    assert resolve_cuda_graphs("on", CUDA, fixed_shape=True) == (True, "set by trainer.cuda_graphs")


def test_cuda_graphs_on_is_refused_where_it_cannot_work():
    from rnnlab.errors import ConfigError
    from rnnlab.train.graphs import check_cuda_graphs

    check_cuda_graphs("on", CUDA, task="lm", fixed_shape=True)  # the one place it may run
    with pytest.raises(ConfigError, match="task translate changes its batch shapes"):
        check_cuda_graphs("on", CUDA, task="translate", fixed_shape=False)
    with pytest.raises(ConfigError, match="trains on cpu"):
        check_cuda_graphs("on", torch.device("cpu"), task="lm", fixed_shape=True)


def test_an_unknown_cuda_graphs_value_is_a_config_error():
    from rnnlab.compose import compose as build
    from rnnlab.errors import ConfigError

    with pytest.raises(ConfigError, match="trainer.cuda_graphs must be one of auto, on, off"):
        build(compose(["trainer.cuda_graphs=maybe", "device=cpu"]))


def test_cuda_graphs_on_without_a_gpu_exits_2_before_any_run(workdir, client):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = cli_inprocess("train", "trainer.cuda_graphs=on", "device=cpu", cwd=workdir)
    assert result.returncode == 2, result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("rnnlab: error:")]
    assert "trainer.cuda_graphs=on asks for CUDA graphs" in line and "device=cuda" in line
    assert "Traceback" not in result.stderr
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert not client.search_runs(experiments)


def test_out_of_memory_names_the_knobs_fails_the_run_and_keeps_its_checkpoint(
    workdir, client, monkeypatch
):
    """Out of memory in epoch 3 (step 13 of 5-step epochs): exit 2, one paragraph naming
    task.batch_size, trainer.precision and a smaller model; the run FAILED with epochs 1-2
    logged and the checkpoint of epoch 2 kept."""
    from rnnlab.train import faults

    monkeypatch.setattr(faults, "_reached", type(faults._reached)())  # this test's count only
    args = ["task.batch_size=4", "trainer.max_epochs=4", "trainer.checkpoint_every_epochs=1"]
    env = {"RNNLAB_FAULT": "train_step@13:oom"}
    result = cli_inprocess("train", *args, "device=cpu", cwd=workdir, env=env)
    assert result.returncode == 2, result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("rnnlab: error:")]
    assert "ran out of memory (CUDA out of memory; tried to allocate 2.00 GiB)" in line
    for knob in ("task.batch_size", "trainer.precision=bf16", "cell.hidden_size"):
        assert knob in line
    assert "Traceback" not in result.stderr
    (run,) = runs_of(client, "bitcount")
    assert run.info.status == "FAILED"
    assert "OutOfMemory" in run.data.tags["failure_reason"]
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [1, 2]
    saved = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    assert saved == {"checkpoints/last.pt"}
    last = client.download_artifacts(run.info.run_id, "checkpoints/last.pt", str(workdir))
    assert torch.load(last, weights_only=False)["progress"]["epoch"] == 3  # after epoch 2


def test_the_run_is_tagged_with_its_cuda_choices(bitcount_run):
    tags = bitcount_run["run"].data.tags
    assert tags["cuda_graphs"] == "off"
    assert tags["cuda_graphs_reason"] == "auto: no CUDA graphs on cpu"
    assert tags["optimizer_impl"].startswith("torch default")
