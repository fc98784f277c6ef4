"""The Hydra entry point of ``rnnlab train``: one job (also each job of a multirun).

It reads the sweep context Hydra gives the job, hands the config to :func:`run_job`, and
applies rnnlab's one error policy (:mod:`rnnlab.errors`). A failed single run exits with the
error's code. In a multirun, a job that diverges is a FAILED MLflow run and returns +inf, so
the sweep goes on (and Optuna learns to avoid that region); an interrupt stops the sweep; any
other error fails the job, and the launcher stops the sweep as Hydra does.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import hydra
from omegaconf import DictConfig

from rnnlab.errors import DivergenceError, debug_enabled, report, user_error
from rnnlab.paths import config_dir


def sweep_context() -> tuple[dict[str, str], str | None]:
    """Tags and parent run id for a Hydra multirun job; the overrides only outside one."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {}, None
    hc = HydraConfig.get()
    overrides = " ".join(hc.overrides.task)
    tags = {"overrides": overrides} if overrides else {}
    if hc.mode != RunMode.MULTIRUN:
        return tags, None
    from rnnlab.tracking.sweep import read_parent_run_id

    parent = read_parent_run_id(hc.sweep.dir)
    tags["sweep"] = parent or str(hc.sweep.dir)
    tags["sweep_job"] = str(hc.job.num)
    return tags, parent


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def concurrent_jobs() -> int:
    """How many jobs the sweep's launcher runs at once: ``hydra.launcher.n_jobs`` (joblib's
    rule: -1 is every core, -2 all but one), 1 outside a multirun or for a sequential one."""
    if not in_multirun():
        return 1
    from hydra.core.hydra_config import HydraConfig

    n_jobs = HydraConfig.get().launcher.get("n_jobs")
    if n_jobs is None:
        return 1
    from rnnlab.train.threads import available_cores

    n_jobs = int(n_jobs)
    return max(1, n_jobs if n_jobs > 0 else available_cores() + 1 + n_jobs)


# What could set ``hydra.mode`` besides the packaged configs (which never do; a test composes
# every experiment to keep it so): the command line naming it, or config dirs of the user's.
MODE_SOURCES = ("hydra.mode", "+hydra.mode", "hydra.searchpath", "--config-dir", "-cd")


@contextmanager
def known_mode(argv: Sequence[str]) -> Iterator[None]:
    """Skip Hydra's first composition when its answer is already known.

    Hydra composes the whole config twice per command: once (``Hydra.get_mode``) only to read
    ``hydra.mode``, then for the job. rnnlab's configs leave ``hydra.mode`` unset, so unless
    ``argv`` names one of :data:`MODE_SOURCES` the first answer is None, and Hydra then picks
    RUN or MULTIRUN from ``-m`` exactly as it would. That is a tenth of a second of every
    ``rnnlab train`` (and a third of a refused one). ``get_mode`` is Hydra's internal API: if
    it is gone, nothing is skipped.
    """
    from hydra._internal.hydra import Hydra

    original = getattr(Hydra, "get_mode", None)
    if original is None or any(a.startswith(MODE_SOURCES) for a in argv):
        yield
        return
    Hydra.get_mode = lambda self, config_name, overrides: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        Hydra.get_mode = original  # type: ignore[method-assign]


@hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Run one job; returns the run's best objective (``task.objective``) for sweepers."""
    from rnnlab.session.spawn import run_any
    from rnnlab.train.signals import Interrupted

    try:
        return run_any(cfg, sweep=sweep_context(), concurrent_jobs=concurrent_jobs())
    except BaseException as exc:
        error = user_error(exc)
        if error is None or debug_enabled():
            raise
        report(error)
        if in_multirun() and not isinstance(error, Interrupted):
            if isinstance(error, DivergenceError):
                return math.inf
            raise error from None
        raise SystemExit(error.exit_code) from None
