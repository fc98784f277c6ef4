"""``rnnlab eval RUN_ID [SPLIT]``: re-compute a finished run's headline metric."""

from __future__ import annotations

import click

from rnnlab.commands.runs import URI_HELP


@click.command("eval")
@click.argument("run_id")
@click.argument("split", default="test")
@click.option("--checkpoint", "which", default="best", show_default=True, help="best or last")
@click.option("--device", default=None, help="auto | cpu | cuda (default: the run's own)")
@click.option("--uri", default=None, help=URI_HELP)
def evaluate(run_id: str, split: str, which: str, device: str | None, uri: str | None) -> None:
    """Load RUN_ID's checkpoint from MLflow and evaluate it on SPLIT (default: test).

    Prints the task's headline metric (loss, ppl, bleu) to two decimals, as logged.
    """
    from rnnlab.errors import RnnlabError
    from rnnlab.session.restore import load_run
    from rnnlab.tracking.uri import resolve_tracking_uri

    split = split.removeprefix("split=")
    restored = load_run(run_id, uri=resolve_tracking_uri(uri), which=which, device=device)
    task = restored.task
    known = (*task.eval_splits, *task.final_splits)
    if split not in known:
        raise RnnlabError(
            f"Task {task.name} has no split '{split}'", f"Choose one of: {', '.join(known)}"
        )
    metrics = task.evaluate(restored.model, split).metrics
    key = f"{split}/{task.headline}"
    click.echo(f"{key}: {metrics[key]:.2f}")
