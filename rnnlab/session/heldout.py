"""``rnnlab eval RUN_ID --src FILE --ref FILE``: score a translation run on a new test set.

The source file is read line by line and translated in chunks (a progress bar counts them),
so only the hypotheses and references are held, as corpus BLEU and chrF need all of them.
The files are checked first (both exist, UTF-8, line-aligned, not empty); the figures are
printed and logged to the same run as ``eval/NAME/bleu`` and ``eval/NAME/chrf``, with the
files' sha256 as a dataset input, so a new test set sits beside ``test/*`` in the UI.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from pathlib import Path

from rnnlab.data.parallel import PairFiles, count_lines, fingerprint, iter_lines, read_lines
from rnnlab.errors import DataError, RnnlabError
from rnnlab.session.restore import load_run
from rnnlab.tasks.base import DataSource, Translates
from rnnlab.tracking.evals import log_evaluation

#: source lines translated per chunk (one step of the progress bar)
CHUNK = 512
FIX = "then run 'rnnlab eval' again"


def default_name(path: Path) -> str:
    """A file's stem without its language and compression suffixes: new.de.gz -> new."""
    name = path.name.removesuffix(".gz")
    return name.rsplit(".", 1)[0] if "." in name else name


def checked_pair(src: Path, ref: Path) -> tuple[PairFiles, int]:
    """The two files, checked to exist and to have the same number of lines; that number."""
    for what, path in (("--src", src), ("--ref", ref)):
        if not path.is_file():
            raise DataError(f"{what} {path}: there is no such file", "Pass an existing file")
    lines = count_lines(src), count_lines(ref)
    if lines[0] != lines[1]:
        raise DataError(
            f"--src {src} has {lines[0]} lines, --ref {ref} has {lines[1]}",
            "Line i of the reference must translate line i of the source; pass aligned files",
        )
    if lines[0] == 0:
        raise DataError(f"--src {src} and --ref {ref} are empty", "Pass files with sentences")
    return PairFiles("eval", src, ref), lines[0]


def chunks(lines: Iterator[str]) -> Iterator[list[str]]:
    while chunk := list(itertools.islice(lines, CHUNK)):
        yield chunk


def translate_file(task, model, pair: PairFiles, total: int, beam: int | None) -> list[str]:
    """One hypothesis per source line (blank lines give blank hypotheses)."""
    hypotheses: list[str] = []
    steps = task.bar(
        chunks(iter_lines(pair.src, fix=FIX)),
        desc="translate",
        unit="chunk",
        total=math.ceil(total / CHUNK),
    )
    for chunk in steps:
        keep = [i for i, line in enumerate(chunk) if line]
        outputs = task.translate(model, [chunk[i] for i in keep], beam_size=beam)
        done = dict(zip(keep, outputs, strict=True))
        hypotheses += [done.get(i, "") for i in range(len(chunk))]
    return hypotheses


def score_translation_files(
    run_id: str,
    *,
    src: Path,
    ref: Path,
    name: str | None,
    beam: int | None,
    uri: str,
    which: str,
    device: str | None,
) -> dict[str, float]:
    """``eval/NAME/bleu`` and ``eval/NAME/chrf`` of the run's model on ``src`` vs ``ref``,
    logged to the run."""
    if beam is not None and beam < 1:
        raise RnnlabError(f"--beam must be at least 1, got {beam}", "Use --beam 1 for greedy")
    pair, total = checked_pair(src, ref)
    restored = load_run(run_id, uri=uri, which=which, device=device)
    task = restored.task
    if not isinstance(task, Translates):
        raise RnnlabError(
            f"Run {run_id} is a '{task.name}' run: --src/--ref score translation runs",
            "Pass the id of a run trained with task=translate (see 'rnnlab runs -e translate')",
        )
    references = read_lines(ref, fix=FIX)
    hypotheses = translate_file(task, restored.model, pair, total, beam)
    scores, _ = task.scores(hypotheses, references)
    name = name or default_name(src)
    metrics = {f"eval/{name}/{metric}": value for metric, value in scores.items()}
    data = DataSource(f"eval-{name}", "eval", fingerprint(pair), f"{src.resolve()} {ref.resolve()}")
    log_evaluation(uri, run_id, metrics=metrics, data=data)
    return metrics
