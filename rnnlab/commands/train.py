"""``rnnlab train``: hands its raw arguments to Hydra.

Setting ``sys.argv`` and calling the module-level ``@hydra.main`` function keeps every Hydra
feature working (overrides, ``-m``, ``--cfg``, ``--info``, launchers and sweepers).
"""

from __future__ import annotations

import gc
import os
import sys

import click

INSPECT_FLAGS = {"--cfg", "-c", "--info", "-i", "--help", "-h", "--hydra-help", "--resolve"}


def check_writable_cwd(overrides: tuple[str, ...]) -> None:
    """Hydra writes its outputs/ (and rnnlab its mlflow.db) in the working directory."""
    if INSPECT_FLAGS & set(overrides) or any(o.startswith("hydra.run.dir=") for o in overrides):
        return
    if not os.access(os.getcwd(), os.W_OK):
        from rnnlab.errors import RnnlabError

        raise RnnlabError(
            f"The working directory {os.getcwd()} is not writable, and a run writes Hydra's "
            "outputs/ and, by default, mlflow.db there",
            "Run from a writable directory, or set hydra.run.dir=... and tracking.uri=... "
            "to writable places",
        )


def one_new_run(overrides: tuple[str, ...]) -> bool:
    """Whether this command trains one new run (the one case a tracking process serves)."""
    multirun = {"-m", "--multirun"} & set(overrides)
    resume = any(o.startswith(("resume=", "+resume=")) for o in overrides)
    a_rank = os.environ.get("WORLD_SIZE", "1") not in ("", "1")  # torchrun's group
    return not (multirun or resume or a_rank or INSPECT_FLAGS & set(overrides))


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
def train(overrides: tuple[str, ...]) -> None:
    """Train a model; OVERRIDES go to Hydra (try: rnnlab train --help).

    \b
    rnnlab train task=bitcount cell=lstm optim=adam optim.lr=1e-2
    rnnlab train -m optim=sgd,rmsprop seed=1,2,3
    rnnlab train --cfg job          # print the composed config
    """
    check_writable_cwd(overrides)
    # Start-up imports torch, its compiler stack and Hydra: hundreds of thousands of objects,
    # none of them garbage, that the cyclic collector would scan again and again as they
    # arrive (a fifth of the import time). It is off until training begins (session.run's
    # execute turns it back on), and back on here whatever happened.
    gc.disable()
    from rnnlab.session import sidecar

    if one_new_run(overrides):
        sidecar.prewarm()  # MLflow's import, in a process of its own, while torch imports here
    from rnnlab.session import job
    from rnnlab.session.rerun import rerun_arguments

    argv = sys.argv
    rerun = rerun_arguments(list(overrides))
    sys.argv = ["rnnlab-train", *rerun, *overrides]
    try:
        with job.known_mode(sys.argv):
            job.main()
    finally:  # the process may go on (tests, notebooks): leave argv and Hydra as they were
        gc.enable()
        sys.argv = argv
        sidecar.discard()  # started, yet no run took it (resume, several ranks, an error)
        if rerun:  # the past run's config, written for Hydra to compose from
            import shutil

            shutil.rmtree(rerun[1], ignore_errors=True)
        from hydra.core.global_hydra import GlobalHydra

        GlobalHydra.instance().clear()
