"""task=adding and task=copy: their data and baselines, a run killed with SIGKILL and resumed
bit-exact with a scan cell, the saved run rebuilt by ``rnnlab eval``, and (make test-all)
the preset sweep over the five cells, generation and translation on saved scan-cell runs."""

from __future__ import annotations

import math
import signal

import pytest
import torch
import torch.nn.functional as F
from conftest import cli_inprocess, run_cli, runs_of

from rnnlab.data.memory import adding_baseline, copy_baseline, make_adding, make_copy

TINY = ["task.length=12", "task.n_train=64", "task.n_val=32", "task.n_test=32"]
TINY += ["task.batch_size=16", "device=cpu"]


def test_adding_data_has_one_marker_per_half_and_the_baseline_is_one_sixth():
    x, y = make_adding(4000, 10, torch.Generator().manual_seed(0))
    assert x.shape == (10, 4000, 2) and y.shape == (4000,)
    markers = x[..., 1]
    assert torch.equal(markers[:5].sum(0), torch.ones(4000))  # one in the first half
    assert torch.equal(markers[5:].sum(0), torch.ones(4000))  # one in the second
    torch.testing.assert_close(y, (x[..., 0] * markers).sum(0))
    assert abs(F.mse_loss(torch.ones_like(y), y).item() - adding_baseline()) < 0.01


def test_copy_data_and_the_memoryless_cross_entropy():
    x, y = make_copy(5, 30, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (50, 5)
    assert torch.equal(y[-10:], x[:10]) and torch.all((x[:10] >= 1) & (x[:10] <= 8))
    assert torch.all(x[39] == 9) and x[10:39].eq(0).all() and x[40:].eq(0).all()
    assert y[:40].eq(0).all()
    # blank for sure until the delimiter's echo, then a uniform guess among the 8 symbols
    logits = torch.full((50, 5, 10), -1e9)
    logits[:40, :, 0] = 0.0
    logits[40:, :, 1:9] = 0.0
    loss = F.cross_entropy(logits.flatten(0, 1), y.flatten()).item()
    assert math.isclose(loss, copy_baseline(30), rel_tol=1e-6)
    assert math.isclose(copy_baseline(500), 10 * math.log(8) / 520)


@pytest.mark.parametrize("name", ["adding", "copy"])
def test_each_epoch_after_the_first_trains_on_new_problems_drawn_from_seed_and_epoch(name):
    from conftest import task_from_config

    def epochs(**options):
        task = task_from_config(name, length=12, n_train=16, batch_size=16, seed=3, **options)
        return task, [next(task.train_batches(epoch=e)) for e in (1, 2, 3, 2)]

    def problems(x):  # the problems of a batch or split, in no particular order
        return sorted(tuple(column.flatten().tolist()) for column in x.unbind(1))

    task, (one, two, three, two_again) = epochs()
    assert problems(one[0]) == problems(task.splits["train"][0])  # epoch 1: the logged split
    assert len({tuple(problems(b[0])) for b in (one, two, three)}) == 3  # new problems
    assert torch.equal(two_again[0], two[0]) and torch.equal(two_again[1], two[1])
    val = task.splits["val"][0]
    assert all(not torch.equal(val[:, :16], b[0]) for b in (one, two, three))
    # the same seed gives the same stream in another process or rank; fresh_train=false
    # trains on the split every epoch
    _, again = epochs()
    assert all(
        torch.equal(a[0], b[0]) for a, b in zip(again, (one, two, three, two_again), strict=True)
    )
    fixed, batches = epochs(fresh_train=False)
    assert all(problems(b[0]) == problems(fixed.splits["train"][0]) for b in batches)


def test_sigkill_then_resume_is_bit_exact_with_a_scan_cell_and_eval_rebuilds_it(workdir, client):
    """The fault point kills the run (SIGKILL) right after its second checkpoint; the resumed
    run ends with the metrics of an uninterrupted one, and ``rnnlab eval`` rebuilds the LRU
    stack from the run and reproduces its test loss."""
    args = ["task=adding", "cell=lru", "cell.num_layers=2", "cell.hidden_size=8", *TINY]
    args += ["trainer.max_epochs=4", "trainer.checkpoint_every_epochs=1"]
    killed = run_cli("train", *args, cwd=workdir, env={"RNNLAB_FAULT": "checkpoint.renamed@2"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (run,) = runs_of(client, "adding")
    resumed = cli_inprocess("train", f"resume={run.info.run_id}", "device=cpu", cwd=workdir)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming run" in resumed.stdout and "rnn path: parallel" in resumed.stdout
    reference = cli_inprocess("train", *args, cwd=workdir)
    assert reference.returncode == 0, reference.stderr
    runs = {r.info.run_id: r for r in runs_of(client, "adding")}
    done = runs.pop(run.info.run_id)
    (ref,) = runs.values()
    for key in ("train/loss", "val/loss", "test/loss", "val/baseline", "test/baseline"):
        assert done.data.metrics[key] == ref.data.metrics[key], key
    assert 0.08 < done.data.metrics["test/baseline"] < 0.3  # answering 1, on 32 sums
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/loss")]
    assert steps == [1, 2, 3, 4]
    evaluated = cli_inprocess("eval", run.info.run_id, cwd=workdir)
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"test/loss: {done.data.metrics['test/loss']:.2f}" in evaluated.stdout


def test_copy_task_trains_a_causal_scan_stack_and_scores_its_recall():
    from conftest import compose

    from rnnlab.compose import compose as build

    parts = build(compose(["task=copy", "cell=minlstm", *TINY]))
    task = parts.task
    model = task.build_model(stack=parts.stack)
    assert model.rnn.path == "parallel"
    batch = next(iter(task.train_batches(epoch=1)))
    assert batch[0].shape == (12 + 20, 16)
    loss, _, weight = task.train_loss(model, batch, None)
    loss.backward()
    assert weight == 32 * 16 and math.isfinite(loss.item())
    metrics = task.evaluate(model, "val").metrics
    assert 0.0 <= metrics["val/acc"] <= 1.0 and math.isfinite(metrics["val/loss"])
    assert metrics["val/baseline"] == pytest.approx(10 * math.log(8) / 32)


@pytest.mark.slow
def test_copy_runs_from_the_command_line(workdir, client):
    done = cli_inprocess(
        "train", "task=copy", "cell=minlstm", *TINY, "trainer.max_epochs=1", cwd=workdir
    )
    assert done.returncode == 0, done.stderr
    (run,) = runs_of(client, "copy")
    assert run.data.tags["rnn_path"] == "parallel"
    assert {"val/acc", "val/baseline", "test/acc"} <= set(run.data.metrics)


@pytest.mark.slow
def test_the_preset_sweep_over_five_cells_and_its_pivot(workdir, client):
    done = cli_inprocess(
        "train", "-m", "experiment=adding_t1000", "cell=lstm,gru,mingru,minlstm,lru",
        *TINY, "trainer.max_epochs=1", cwd=workdir,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    runs = [r for r in runs_of(client, "adding") if "cell.name" in r.data.params]
    assert sorted(r.data.params["cell.name"] for r in runs) == [
        "gru", "lru", "lstm", "mingru", "minlstm",
    ]  # fmt: skip
    counts = [int(r.data.tags["parameters"]) for r in runs]
    assert max(counts) < 1.25 * min(counts)  # the preset's widths: about equal parameters
    table = cli_inprocess(
        "runs", "-e", "adding", "--pivot", "cell.name", "task.length", "--metric", "val/loss",
        cwd=workdir,
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    for cell in ("lstm", "gru", "mingru", "minlstm", "lru"):
        assert cell in table.stdout


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["mingru", "lru"])
def test_generate_on_a_saved_scan_cell_language_model(cell, workdir, client, shared_data):
    for level in ("word", "char"):
        done = cli_inprocess(
            "train", "experiment=ptb_tiny", f"cell={cell}", f"task.level={level}",
            "device=cpu", cwd=workdir,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    runs = runs_of(client, "ptb")
    assert all(r.data.tags["rnn_path"] == "parallel" for r in runs)
    assert any("val/bpc" in r.data.metrics for r in runs)
    for run in runs:
        out = cli_inprocess("generate", run.info.run_id, "--words", "12", cwd=workdir)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip()


@pytest.mark.slow
def test_translate_on_a_saved_scan_cell_run_with_beam_search(workdir, client, shared_data):
    done = cli_inprocess("train", "experiment=multi30k_tiny", "cell=lru", "device=cpu", cwd=workdir)
    assert done.returncode == 0, done.stderr
    (run,) = runs_of(client, "translate")
    assert run.data.tags["rnn_path"] == "parallel"
    out = cli_inprocess(
        "translate", run.info.run_id, "--beam", "3", "Ein Mann fährt Fahrrad.", cwd=workdir
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()
