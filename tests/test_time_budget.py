"""Runs that end before ``trainer.max_epochs``.

``trainer.max_time_s``: a training-time budget ends the epoch in progress at the step that
spends it; that epoch is evaluated and checkpointed as the last, and the run finishes tagged.
``trainer.patience``: early stopping once the objective has not improved for that many epochs.

No test here depends on how fast a machine is or on how a model learns: early stopping is
driven by a learning rate of 0, whose validation loss is the same every epoch. And no test
depends on timing: a budget of 1e-9 s is spent by the first step
on any machine, and a budget equal to the time a first fit already spent is spent the moment
the continued fit starts, since the budget counts the training time of earlier epochs and
sessions (``Progress.trained_s``, carried in every checkpoint).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from conftest import compose, runs_of, train

#: bitcount in four batches of five sequences per epoch, so an epoch can end early
FOUR_BATCHES = ["cell=gru", "task.batch_size=5", "device=cpu"]


def test_a_spent_budget_ends_the_epoch_at_that_step_and_the_run_finishes_evaluated(
    workdir, client, capsys
):
    train(
        [
            *FOUR_BATCHES,
            "trainer.max_epochs=4",
            "trainer.max_time_s=1e-9",
            "tracking.log_model=false",
        ]
    )
    (run,) = runs_of(client, "bitcount")
    assert run.info.status == "FINISHED"
    assert run.data.tags["stopped_by"] == "max_time_s"
    assert run.data.tags["epochs_trained"] == "1"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [1]  # epoch 1 is the last
    assert {"val/loss", "test/loss", "test_long/loss"} <= run.data.metrics.keys()
    out = capsys.readouterr().out
    assert "trainer.max_time_s=1e-09 spent: epoch 1 ends after 1 batches" in out
    assert "stopped by trainer.max_time_s in epoch 1" in out
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    assert {"checkpoints/last.pt", "checkpoints/best.pt"} <= artifacts


def test_the_budget_counts_the_epochs_trained_before_a_resume(workdir):
    from rnnlab.compose import compose as build
    from rnnlab.train.loop import Progress, fit
    from rnnlab.train.recorder import MemoryRecorder

    parts = build(compose([*FOUR_BATCHES, "trainer.progress=false"]))
    torch.manual_seed(0)
    model = parts.task.build_model(stack=parts.stack)
    optimizer = parts.optimizer(model.parameters())
    progress, recorder = Progress(), MemoryRecorder()

    def run(**settings):
        return fit(
            model=model,
            task=parts.task,
            optimizer=optimizer,
            scheduler=None,
            settings=replace(parts.trainer, **settings),
            recorder=recorder,
            start=progress,
        )

    first = run(max_epochs=2)  # no budget: both epochs, whole
    assert (first.epochs, first.out_of_time, progress.step) == (2, False, 8)
    assert progress.trained_s > 0
    # a checkpoint carries the time spent (Progress round-trips through its state dict)
    progress = Progress.from_state_dict(progress.state_dict())
    spent = progress.trained_s
    second = run(max_epochs=4, max_time_s=spent)  # already spent: epoch 3 ends at its 1st step
    assert (second.epochs, second.out_of_time, progress.step) == (3, True, 9)  # 1 step more
    assert [epoch for epoch, _ in second.history["train/loss"]] == [1, 2, 3]
    assert "val/loss" in second.final
    assert progress.trained_s > spent


def test_the_progress_line_counts_down_the_budget_not_the_epochs(capsys):
    import re
    import time

    from rnnlab.train.lines import EpochLines

    def line(budget_s):
        lines = EpochLines(total=100, first=1, interval_s=0, enabled=True, budget_s=budget_s)
        lines.began = time.perf_counter() - 3000  # an epoch of 50 min done, 99 to go
        lines.epoch(1, {"train/loss": 1.0})
        return capsys.readouterr().out.strip()

    assert re.search(r"eta 82:3\d:\d\d$", line(None))  # 99 epochs of 50 min
    assert re.search(r"eta (49:5\d|50:00)$", line(6000))  # the budget's 50 min left


#: a learning rate of 0: the weights, and so val/loss, stay the same every epoch
FROZEN = [*FOUR_BATCHES, "optim=sgd", "optim.lr=0"]


def test_patience_ends_the_run_once_the_objective_stops_improving(workdir, client, capsys):
    train([*FROZEN, "trainer.max_epochs=10", "trainer.patience=2", "tracking.log_model=false"])
    (run,) = runs_of(client, "bitcount")
    assert run.info.status == "FINISHED"
    assert (run.data.tags["stopped_by"], run.data.tags["epochs_trained"]) == ("patience", "3")
    val = client.get_metric_history(run.info.run_id, "val/loss")
    assert [m.step for m in val] == [1, 2, 3]  # best at 1, then two epochs no better
    assert len({m.value for m in val}) == 1
    assert {"test/loss", "test_long/loss"} <= run.data.metrics.keys()  # the best evaluated
    out = capsys.readouterr().out
    assert "trainer.patience=2: val/loss has not improved since epoch 1; epoch 3 is the last" in out
    assert (
        f"stopped early after epoch 3 (trainer.patience): best val/loss {val[0].value:.6g} "
        "at epoch 1" in out
    )
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    assert {"checkpoints/last.pt", "checkpoints/best.pt"} <= artifacts


def test_a_resumed_run_keeps_the_stop_its_progress_implies(workdir):
    """The stop is a function of the checkpointed Progress: continuing a stopped fit trains
    nothing more, and a larger patience continues it to its own limit."""
    from rnnlab.compose import compose as build
    from rnnlab.train.loop import Progress, fit
    from rnnlab.train.recorder import MemoryRecorder

    parts = build(compose([*FROZEN, "trainer.progress=false"]))
    model = parts.task.build_model(stack=parts.stack)
    optimizer = parts.optimizer(model.parameters())
    progress = Progress()

    def run(**settings):
        settings = replace(parts.trainer, max_epochs=10, **settings)
        return fit(
            model=model,
            task=parts.task,
            optimizer=optimizer,
            scheduler=None,
            settings=settings,
            recorder=MemoryRecorder(),
            start=progress,
        )

    first = run(patience=2)
    assert (first.epochs, first.best_epoch, first.out_of_patience, progress.step) == (
        3,
        1,
        True,
        12,
    )
    progress = Progress.from_state_dict(progress.state_dict())  # as a checkpoint carries it
    again = run(patience=2)
    assert (again.epochs, again.out_of_patience, progress.step) == (3, True, 12)  # no step more
    longer = run(patience=4)
    assert (longer.epochs, longer.out_of_patience, progress.step) == (5, True, 20)
    assert not run(patience=None).out_of_patience  # none: on to max_epochs
    assert progress.epoch - 1 == 10
