"""The Task interface the training loop drives.

A task builds its model from a :class:`~rnnlab.models.stack.StackSpec`, yields training
batches, computes the loss of one batch (optionally threading a ``carry`` such as a
truncated-BPTT hidden state from batch to batch), and evaluates a model on a split into
named metrics (``val/loss``, ``test/ppl``, ...). Metric names are the MLflow keys.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from rnnlab.models.stack import StackSpec


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The data-order generator of one epoch: a function of (seed, epoch) only, so a run
    resumed mid-training sees exactly the batches it would have seen."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


class Task(abc.ABC):
    """Base class for a task. Subclasses take typed keyword arguments only."""

    name: ClassVar[str]
    #: the metric a sweep minimises and that picks the best checkpoint
    objective: ClassVar[str] = "val/loss"
    #: splits evaluated every epoch, and once at the end with the best model
    eval_splits: ClassVar[tuple[str, ...]] = ("val",)
    final_splits: ClassVar[tuple[str, ...]] = ("test",)
    #: the metric ``rnnlab eval`` prints (``<split>/<headline>``)
    headline: ClassVar[str] = "loss"

    device: torch.device = torch.device("cpu")

    def to(self, device: torch.device) -> Task:
        """Move the task's tensors to ``device``; returns self."""
        self.device = device
        return self

    @abc.abstractmethod
    def build_model(self, *, stack: StackSpec) -> nn.Module:
        """The model for this task, with the given recurrent stack inside."""

    @abc.abstractmethod
    def train_batches(self, *, epoch: int) -> Iterable[Any]:
        """The batches of one training epoch (shuffled from the task's own generator)."""

    def init_carry(self, model: nn.Module) -> Any:
        """State threaded from batch to batch within an epoch; None by default."""
        return None

    @abc.abstractmethod
    def train_loss(self, model: nn.Module, batch: Any, carry: Any) -> tuple[Tensor, Any, int]:
        """(loss to back-propagate, new carry, weight of this batch in the epoch mean)."""

    def train_metrics(
        self, mean_loss: float, *, weight: float = 0.0, seconds: float = 0.0
    ) -> dict[str, float]:
        """Epoch-level training metrics from the weighted mean batch loss.

        ``weight`` is the epoch's summed batch weights (tokens, for a language model) and
        ``seconds`` its training wall time (evaluation excluded), for throughput metrics.
        """
        return {"train/loss": mean_loss}

    @abc.abstractmethod
    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        """Metrics on ``split``, keyed ``<split>/<metric>``."""

    def state_dict(self) -> dict[str, Any]:
        """Task state worth saving with a checkpoint (vocabularies, ...)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (before :meth:`build_model`)."""
        return None

    def write_artifacts(self, model: nn.Module, out_dir: Path) -> list[Path]:
        """Task-specific artifacts (samples, translations) written into out_dir."""
        return []

    def summary(self, model: nn.Module) -> list[str]:
        """Lines for the end-of-run console summary."""
        return []

    def tags(self) -> dict[str, str]:
        """Run tags known only after the final evaluation (e.g. a metric's signature)."""
        return {}
