"""``rnnlab generate RUN_ID``: sample text from a trained language model."""

from __future__ import annotations

import click

from rnnlab.commands.params import FINITE_POSITIVE
from rnnlab.commands.runs import URI_HELP


@click.command("generate")
@click.argument("run_id")
@click.option("--words", default=50, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--temperature",
    default=1.0,
    show_default=True,
    type=FINITE_POSITIVE,
    help="Softmax temperature (> 0): below 1 is safer, above 1 wilder.",
)
@click.option(
    "--prime",
    default=None,
    help="Words to start from (each must be in the run's vocabulary); default: a sentence start.",
)
@click.option(
    "--seed", default=0, show_default=True, type=click.IntRange(0, 2**63 - 1), help="Sampling seed."
)
@click.option("--checkpoint", "which", default="best", show_default=True, help="best or last")
@click.option("--device", default="cpu", show_default=True, help="auto | cpu | cuda")
@click.option("--uri", default=None, help=URI_HELP)
def generate(
    run_id: str,
    words: int,
    temperature: float,
    prime: str | None,
    seed: int,
    which: str,
    device: str,
    uri: str | None,
) -> None:
    """Sample WORDS words from RUN_ID's language model, running it free on its own samples.

    The model first reads the prime words (or a sentence start, <eos>), then each sampled
    word is fed back in. Output: the sampled words only, a line break after each <eos>.
    """
    from rnnlab.errors import RnnlabError
    from rnnlab.session.restore import load_run
    from rnnlab.tasks.base import Samples
    from rnnlab.tracking.uri import resolve_tracking_uri

    if temperature <= 0:
        raise RnnlabError(
            f"--temperature must be positive, got {temperature}",
            "Use 1.0 for the model's own distribution, lower (0.7) for safer text",
        )
    restored = load_run(run_id, uri=resolve_tracking_uri(uri), which=which, device=device)
    task = restored.task
    if not isinstance(task, Samples):
        raise RnnlabError(
            f"Run {run_id} is a {task.name} run, not a language model",
            "Pass the id of a ptb run (rnnlab runs --experiment ptb lists them)",
        )
    text = task.sample_text(
        restored.model, prime=prime, steps=words, temperature=temperature, seed=seed
    )
    click.echo(text)
