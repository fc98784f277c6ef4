"""Config nodes -> typed objects: the task, the stack spec, optimizer and scheduler factories.

Each builder checks its values completely (a probe build where only the constructor knows
the rules: torch's optimizers, the cell contract), so a bad value fails here, before any run
exists, with one :class:`~rnnlab.errors.ConfigError` naming the keys to fix.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from omegaconf import DictConfig

from rnnlab.compose.read import SHOWS_CONFIG, plain, read_options
from rnnlab.compose.schema import StackOptions
from rnnlab.errors import ConfigError
from rnnlab.models.blocks import BlockSpec
from rnnlab.models.stack import CellContractError, StackSpec
from rnnlab.tasks.base import Task
from rnnlab.train.loop import step_scheduler

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


def target_error(target: str, what: str, exc: Exception) -> ConfigError:
    cause = exc.__cause__ or exc
    fix = f"Check the {what} values you set on the command line ({SHOWS_CONFIG})"
    if isinstance(cause, ImportError) or "Error locating target" in str(exc):
        fix = (
            f"Make the module of {target} importable: put the folder holding its .py file on "
            "PYTHONPATH (PYTHONPATH=DIR rnnlab train ...) or pip install it"
        )
    return ConfigError(
        f"Could not build the {what} from its config ({target}): {type(cause).__name__}: {cause}",
        fix,
    )


def partial_target(node: Any, what: str) -> Callable[..., Any]:
    """``node`` (with ``_target_``) as a factory completed later with the remaining arguments."""
    from hydra.utils import instantiate

    params = dict(plain(node))
    params.pop("name", None)
    params["_partial_"] = True
    target = params.get("_target_", "?")
    try:
        return instantiate(params, _convert_="all")
    except Exception as exc:
        raise target_error(target, what, exc) from exc


def build_task(node: DictConfig, *, progress: bool | None) -> Task:
    """The task named by ``task._target_``, built from its validated options."""
    from hydra.utils import get_class

    target = str(node.get("_target_", "?"))
    try:
        cls = get_class(target)
    except Exception as exc:
        raise target_error(target, "task", exc) from exc
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ConfigError(
            f"task._target_={target} is not an rnnlab Task",
            "Point task._target_ at a subclass of rnnlab.tasks.base.Task",
        )
    # a run recorded before a task key existed reads the value that does what it did
    missing = {k: v for k, v in cls.backfill.items() if k not in node}
    task = cls(read_options(cls.Options, {**plain(node), **missing}))
    task.progress = progress
    return task


def build_stack(node: DictConfig) -> StackSpec:
    """The StackSpec of the ``cell`` group; built once on one input to check every option."""
    options = read_options(StackOptions, node, drop=("layer",))
    spec = StackSpec(
        cell=partial_target(node.layer, "cell"),
        hidden_sizes=options.sizes,
        dropout=options.dropout,
        name=options.name,
        bidirectional=options.bidirectional,
        locked_dropout=options.locked_dropout,
        zoneout=options.zoneout,
        compile=options.compile,
        compile_chunk=options.compile_chunk,
        scan=options.scan,
        scan_chunk=options.scan_chunk,
        block=BlockSpec(
            residual=options.residual,
            pre_norm=options.pre_norm,
            ffn=options.ffn,
            ffn_mult=options.ffn_mult,
        ),
    )
    try:
        spec.build(input_size=1)
    except CellContractError as exc:
        raise ConfigError(
            f"The cell does not follow the Cell interface: {exc}",
            "Fix the cell's init_state/forward (see rnnlab/cells/base.py and docs/cells.md, "
            "'Your own cell')",
        ) from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"Invalid cell options for {node.layer.get('_target_')}: {type(exc).__name__}: {exc}",
            f"Check the cell.* and cell.layer.* values ({SHOWS_CONFIG})",
        ) from exc
    return spec


def probe_parameters() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.zeros(1))]


def build_optimizer(node: DictConfig) -> OptimizerFactory:
    """``optim`` as a factory of the optimizer; torch's checks run on a probe at compose time."""
    factory = partial_target(node, "optimizer")
    try:
        factory(probe_parameters())
    except Exception as exc:
        raise ConfigError(
            f"Invalid optimizer settings for {node.get('_target_')}: {type(exc).__name__}: {exc}",
            "Check the optim.* values (numbers such as optim.lr=1e-3)",
        ) from exc
    return factory


def build_scheduler(node: DictConfig, optimizer: OptimizerFactory) -> SchedulerFactory | None:
    """``sched`` as a factory (None for ``sched=none``), probed once like the optimizer."""
    if not node.get("_target_"):
        return None
    factory = partial_target(node, "scheduler")
    try:
        with warnings.catch_warnings():  # torch warns: a probe steps no optimizer first
            warnings.simplefilter("ignore", UserWarning)
            step_scheduler(factory(optimizer(probe_parameters())), 1.0)
    except Exception as exc:
        raise ConfigError(
            f"Invalid scheduler settings for {node.get('_target_')}: {type(exc).__name__}: {exc}",
            "Check the sched.* values",
        ) from exc
    return factory
