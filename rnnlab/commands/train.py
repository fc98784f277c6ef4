"""``rnnlab train``: hands its raw arguments to Hydra.

Setting ``sys.argv`` and calling the module-level ``@hydra.main`` function keeps every Hydra
feature working (overrides, ``-m``, ``--cfg``, ``--info``, launchers and sweepers).
"""

from __future__ import annotations

import sys

import click


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
    from rnnlab import app

    sys.argv = ["rnnlab-train", *overrides]
    app.main()
