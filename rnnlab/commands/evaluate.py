"""``rnnlab eval RUN_ID [SPLIT]``: re-compute a finished run's headline metric; with
``--src/--ref``, score a translation run on a new test set (:mod:`rnnlab.session.heldout`)."""

from __future__ import annotations

from pathlib import Path

import click

from rnnlab.commands.runs import URI_HELP


@click.command("eval")
@click.argument("run_id")
@click.argument("split", default="test")
@click.option("--checkpoint", "which", default="best", show_default=True, help="best or last")
@click.option("--device", default=None, help="auto | cpu | cuda (default: the run's own)")
@click.option("--uri", default=None, help=URI_HELP)
@click.option("--src", type=Path, default=None, help="Source sentences of a new test set.")
@click.option("--ref", type=Path, default=None, help="Their reference translations.")
@click.option("--name", default=None, help="Logged as eval/NAME/* (default: the file's stem).")
@click.option("--beam", "beam_size", type=int, default=None, help="Beam size (default: the run's).")
def evaluate(
    run_id: str,
    split: str,
    which: str,
    device: str | None,
    uri: str | None,
    src: Path | None,
    ref: Path | None,
    name: str | None,
    beam_size: int | None,
) -> None:
    """Load RUN_ID's checkpoint from MLflow and evaluate it on SPLIT (default: test).

    Prints the task's headline metric (loss, ppl, bleu) to two decimals, as logged.
    With --src FILE --ref FILE (a translation run): prints BLEU and chrF on those files and
    logs them to the run as eval/NAME/bleu and eval/NAME/chrf.
    """
    from rnnlab.errors import RnnlabError
    from rnnlab.session.restore import load_run
    from rnnlab.tracking.uri import resolve_tracking_uri

    if src is not None or ref is not None:
        parallel_eval(
            run_id, src, ref, name=name, beam=beam_size, uri=uri, which=which, device=device
        )
        return

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
