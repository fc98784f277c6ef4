"""``trainer.max_time_s``: a training-time budget ends the epoch in progress at the step that
spends it; that epoch is evaluated and checkpointed as the last, and the run finishes tagged.

No test here depends on how fast a machine is: a budget of 1e-9 s is spent by the first step
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
