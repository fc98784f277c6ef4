"""``rnnlab eval RUN_ID [SPLIT]``: re-compute a finished run's headline metric, or score it on
a new file (``--text``) and log the figures to the same run as ``eval/NAME/*``.

Each data option dispatches on a capability protocol of the run's task
(:mod:`rnnlab.tasks.base`): ``--text`` needs :class:`~rnnlab.tasks.base.ScoresText`.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from rnnlab.commands.runs import URI_HELP

#: characters MLflow allows in a metric key; others in NAME become "_"
NOT_IN_KEY = re.compile(r"[^A-Za-z0-9_.\- ]")


@click.command("eval")
@click.argument("run_id")
@click.argument("split", default="test")
@click.option(
    "--text",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Score a language model on this text file (loss, ppl; bpc at character level).",
)
@click.option("--name", default=None, help="Metric prefix eval/NAME/ (default: the file's stem).")
@click.option("--checkpoint", "which", default="best", show_default=True, help="best or last")
@click.option("--device", default=None, help="auto | cpu | cuda (default: the run's own)")
@click.option("--uri", default=None, help=URI_HELP)
def evaluate(
    run_id: str,
    split: str,
    text: Path | None,
    name: str | None,
    which: str,
    device: str | None,
    uri: str | None,
) -> None:
    """Load RUN_ID's checkpoint from MLflow and evaluate it on SPLIT (default: test), or on
    a new file with --text.

    Prints the task's headline metric (loss, ppl, bpc, bleu) to two decimals. With --text
    the figures are also logged to RUN_ID as eval/NAME/*, and the file's sha256 as a dataset
    input of the run.
    """
    from rnnlab.session.restore import load_run
    from rnnlab.tracking.uri import resolve_tracking_uri

    resolved = resolve_tracking_uri(uri)
    restored = load_run(run_id, uri=resolved, which=which, device=device)
    if text is not None:
        score_text_file(restored, uri=resolved, path=text, name=name or text.stem)
    else:
        rescore_split(restored, split.removeprefix("split="))


def rescore_split(restored, split: str) -> None:
    from rnnlab.errors import RnnlabError

    task = restored.task
    known = (*task.eval_splits, *task.final_splits)
    if split not in known:
        raise RnnlabError(
            f"Task {task.name} has no split '{split}'", f"Choose one of: {', '.join(known)}"
        )
    metrics = task.evaluate(restored.model, split).metrics
    key = f"{split}/{task.headline}"
    click.echo(f"{key}: {metrics[key]:.2f}")


def score_text_file(restored, *, uri: str, path: Path, name: str) -> None:
    """Score ``path``, print the headline, log ``eval/NAME/*`` and the dataset input."""
    from rnnlab.errors import RnnlabError
    from rnnlab.tasks.base import ScoresText
    from rnnlab.tracking.evaluation import record_evaluation

    task, run_id = restored.task, restored.run.info.run_id
    if not isinstance(task, ScoresText):
        raise RnnlabError(
            f"Run {run_id} is a '{task.name}' run: --text scores a language model",
            "Pass the id of a language-model run (task=lm or task=ptb)",
        )
    name = NOT_IN_KEY.sub("_", name)
    source = task.text_source(path, name=name)
    result = task.score_text(restored.model, path, name=name)
    record_evaluation(uri, run_id, result, source)
    key = f"eval/{name}/{task.headline}"
    click.echo(f"{key}: {result.metrics[key]:.2f}")
