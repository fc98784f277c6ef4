"""CUDA graphs for the training step: ``trainer.cuda_graphs`` = ``auto``, ``on`` or ``off``.

On a GPU a small recurrent step (a PTB window is 700 tokens) is bound by kernel launches and
host work, not arithmetic (``../shared/notes/recurrent-speed-facts.md``). A CUDA graph records
a step's kernels once and replays them with one launch. rnnlab gets them through
``torch.compile(mode="reduce-overhead")`` on the module the forward pass runs through
(AOTAutograd graphs its backward too), which pays only where every step has the same shapes:
the language model's ``bptt`` windows (the epoch's last, shorter window records one more
graph). Translation batches change shape from batch to batch, and bit counting is a CPU demo.

``auto`` chooses, and the run's ``cuda_graphs_reason`` tag says why, as ``precision_reason``
does for ``trainer.precision``. Today ``auto`` is off everywhere: on the CPU there are no CUDA
graphs, and on CUDA it has not been measured whether they pay for these models (compiled
LSTMs have measured slower than eager cuDNN, pytorch/pytorch#140845), so it stays off until
``scripts/gpu_check.sh tests`` (its ``cuda_graphs`` bench side) shows a win; docs/benchmarks.md,
"CUDA", records that measurement. ``on`` needs ``device=cuda`` and a task with fixed-shape
steps; anything else is refused before a run exists.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rnnlab.errors import ConfigError

CUDA_GRAPHS = ("auto", "on", "off")
#: why ``auto`` is off on CUDA (a tag value): no GPU measurement has decided it yet
UNMEASURED = (
    "auto: off until a GPU measurement shows graphs pay for this step "
    "(scripts/gpu_check.sh tests; docs/benchmarks.md, CUDA)"
)


def resolve_cuda_graphs(
    requested: str, device: torch.device, *, fixed_shape: bool
) -> tuple[bool, str]:
    """``(use graphs, reason)`` for ``trainer.cuda_graphs=requested`` on ``device``."""
    if requested == "on":
        return True, "set by trainer.cuda_graphs"
    if requested == "off":
        return False, "set by trainer.cuda_graphs"
    if device.type != "cuda":
        return False, f"auto: no CUDA graphs on {device.type}"
    if not fixed_shape:
        return False, "auto: this task's steps change shape from batch to batch"
    return False, UNMEASURED


def check_cuda_graphs(
    requested: str, device: torch.device, *, task: str, fixed_shape: bool
) -> None:
    """Refuse ``trainer.cuda_graphs=on`` where it cannot work (a ConfigError, exit 2)."""
    if requested != "on":
        return
    if device.type != "cuda":
        raise ConfigError(
            f"trainer.cuda_graphs=on asks for CUDA graphs, but the run trains on {device}, "
            "where there are none",
            "Use device=cuda on a machine with a GPU, or trainer.cuda_graphs=auto (off here)",
        )
    if not fixed_shape:
        raise ConfigError(
            f"trainer.cuda_graphs=on needs steps of one shape, but task {task} changes its "
            "batch shapes from step to step (a graph would be recorded for every new shape)",
            "Use trainer.cuda_graphs=auto or off for this task (task=lm and task=ptb have "
            "fixed-shape steps)",
        )


def graphed(trainee: nn.Module) -> Any:
    """``trainee`` compiled so that its forward and backward replay as CUDA graphs."""
    return torch.compile(trainee, mode="reduce-overhead", dynamic=False)


def begin_graphed_step() -> None:
    """Mark a new training step: outputs of the previous replay may now be overwritten."""
    torch.compiler.cudagraph_mark_step_begin()
