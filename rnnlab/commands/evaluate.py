"""``rnnlab eval RUN_ID [SPLIT]``: re-compute a finished run's headline metric, or score it on
new files and log the figures to the same run as ``eval/NAME/*``.

Each data option dispatches on a capability of the run's task (:mod:`rnnlab.tasks.base`):
``--text`` needs :class:`~rnnlab.tasks.base.ScoresText` (a language model); ``--src/--ref``
scores a translation run (:mod:`rnnlab.session.heldout`).
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
@click.option("--src", type=Path, default=None, help="Source sentences of a new test set.")
@click.option("--ref", type=Path, default=None, help="Their reference translations.")
@click.option("--name", default=None, help="Metric prefix eval/NAME/ (default: the file's stem).")
@click.option("--beam", "beam_size", type=int, default=None, help="Beam size (default: the run's).")
@click.option("--checkpoint", "which", default="best", show_default=True, help="best or last")
@click.option("--device", default=None, help="auto | cpu | cuda (default: the run's own)")
@click.option("--uri", default=None, help=URI_HELP)
def evaluate(
    run_id: str,
    split: str,
    text: Path | None,
    src: Path | None,
    ref: Path | None,
    name: str | None,
    beam_size: int | None,
    which: str,
    device: str | None,
    uri: str | None,
) -> None:
    """Load RUN_ID's checkpoint from MLflow and evaluate it on SPLIT (default: test), or on
    new files: --text FILE (a language model), --src FILE --ref FILE (a translation run).

    Prints the task's headline metric (loss, ppl, bpc, bleu) to two decimals. With --text or
    --src/--ref the figures are also logged to RUN_ID as eval/NAME/* (BLEU and chrF for
    translation), and the files' sha256 as a dataset input of the run.
    """
    from rnnlab.session.restore import load_run
    from rnnlab.tracking.uri import resolve_tracking_uri

    if src is not None or ref is not None:
        parallel_eval(
            run_id, src, ref, name=name, beam=beam_size, uri=uri, which=which, device=device
        )
        return
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
            "Pass the id of a language-model run (task=lm or task=ptb), or --src/--ref for "
            "a translation run",
        )
    name = NOT_IN_KEY.sub("_", name)
    source = task.text_source(path, name=name)
    result = task.score_text(restored.model, path, name=name)
    record_evaluation(uri, run_id, result, source)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    key = f"eval/{name}/{task.headline}"
    click.echo(f"{key}: {result.metrics[key]:.2f}")


def parallel_eval(run_id: str, src: Path | None, ref: Path | None, **options) -> None:
    """``--src/--ref``: BLEU and chrF of the run's translations, printed and logged."""
    from rnnlab.errors import RnnlabError
    from rnnlab.session.heldout import score_translation_files
    from rnnlab.tracking.uri import resolve_tracking_uri

    if src is None or ref is None:
        given, missing = ("--src", "--ref") if ref is None else ("--ref", "--src")
        raise RnnlabError(f"{given} needs {missing}", "Pass both: --src FILE --ref FILE")
    options["uri"] = resolve_tracking_uri(options["uri"])
    metrics = score_translation_files(run_id, src=src, ref=ref, **options)
    for key, value in metrics.items():
        if key.endswith(("/bleu", "/chrf")):  # the headline figures; eval/NAME/unk is logged
            click.echo(f"{key}: {value:.2f}")
