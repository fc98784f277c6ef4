"""The ``rnnlab`` command line: a click group whose sub-commands live in :mod:`rnnlab.commands`.

Heavy imports (torch, mlflow, hydra) happen inside commands, so ``rnnlab --help`` and
``rnnlab --version`` stay fast. A :class:`~rnnlab.errors.RnnlabError` is printed as one
paragraph and exits with its code; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import gc
import os
import sys

import click

from rnnlab import __version__
from rnnlab.commands.bench import bench
from rnnlab.commands.data import data
from rnnlab.commands.evaluate import evaluate
from rnnlab.commands.forecast import forecast
from rnnlab.commands.generate import generate
from rnnlab.commands.plot import landscape, plot
from rnnlab.commands.predict import predict
from rnnlab.commands.runs import runs
from rnnlab.commands.serve import serve
from rnnlab.commands.server import server
from rnnlab.commands.train import train
from rnnlab.commands.translate import translate
from rnnlab.commands.ui import ui
from rnnlab.errors import DEBUG_VAR, debug_enabled, report, user_error


class RnnlabGroup(click.Group):
    """Applies rnnlab's one error policy (:mod:`rnnlab.errors`) to every sub-command."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Exception as exc:
            error = user_error(exc)
            if error is None or debug_enabled():
                raise
            report(error)
            sys.exit(error.exit_code)


@click.group(cls=RnnlabGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="rnnlab")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
def cli(debug: bool) -> None:
    """rnnlab: train recurrent sequence models from the shell, tracked in MLflow.

    \b
    Examples:
      rnnlab train task=bitcount optim=rmsprop
      rnnlab train -m task=bitcount optim=sgd,rmsprop seed=1,2
      rnnlab runs --experiment bitcount
      rnnlab ui
    """
    if debug:
        os.environ[DEBUG_VAR] = "1"


for command in (
    train,
    evaluate,
    generate,
    translate,
    forecast,
    predict,
    data,
    runs,
    plot,
    landscape,
    ui,
    server,
    serve,
    bench,
):
    cli.add_command(command)


def main() -> None:
    from rnnlab.session import sidecar

    sidecar.allow()  # a process of its own: MLflow's writes may go to a tracking process
    try:
        cli(prog_name="rnnlab")
    finally:
        # the interpreter's last collection walks every object torch and Hydra made: ~0.5 s
        # of a short run's exit, to free memory the process hands back anyway
        gc.freeze()


if __name__ == "__main__":
    main()
