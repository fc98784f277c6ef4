"""Bit counting: regress the number of ones in a binary sequence.

The classic demo for the two-weight linear recurrence s_t = x_t·w_x + s_{t-1}·w_rec: with
20 training sequences of length 10, full batch and a sum-of-squared-errors loss, RMSProp
at lr 1e-3 finds w_x = w_rec = 1 while plain gradient descent at lr 1e-5 still crawls.
A test set of longer sequences (length 50 by default) tells counting from memorising.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from rnnlab.data.bits import make_bits
from rnnlab.models.seq2one import SequenceRegressor
from rnnlab.models.stack import StackSpec
from rnnlab.options import POSITIVE, Options, option
from rnnlab.tasks.base import EvalResult, Task, epoch_generator


@dataclass(frozen=True)
class BitCountOptions(Options):
    """``task.*`` of ``conf/task/bitcount.yaml``."""

    section: ClassVar[str] = "task"

    seed: int = option()
    n_train: int = option(POSITIVE)
    seq_len: int = option(POSITIVE)
    #: None: full batch
    batch_size: int | None = option(POSITIVE)
    n_val: int = option(POSITIVE)
    n_test: int = option(POSITIVE)
    n_test_long: int = option(POSITIVE)
    test_long_seq_len: int = option(POSITIVE)


class BitCount(Task):
    """Sequence-to-one regression on random bit strings, generated from ``seed``."""

    name: ClassVar[str] = "bitcount"
    Options = BitCountOptions
    final_splits: ClassVar[tuple[str, ...]] = ("test", "test_long")

    def __init__(self, options: BitCountOptions) -> None:
        super().__init__(options)
        o = options
        self.batch_size = o.batch_size or o.n_train
        generator = torch.Generator().manual_seed(o.seed)  # draws train first: data.bits
        self.splits: dict[str, tuple[Tensor, Tensor]] = {
            "train": make_bits(o.n_train, o.seq_len, generator),
            "val": make_bits(o.n_val, o.seq_len, generator),
            "test": make_bits(o.n_test, o.seq_len, generator),
            "test_long": make_bits(o.n_test_long, o.test_long_seq_len, generator),
        }
        self.seed = o.seed

    def to(self, device: torch.device) -> BitCount:
        self.device = device
        self.splits = {k: (x.to(device), y.to(device)) for k, (x, y) in self.splits.items()}
        return self

    def build_model(self, *, stack: StackSpec) -> nn.Module:
        return SequenceRegressor(stack=stack, input_size=1)

    def train_batches(self, *, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        x, y = self.splits["train"]
        n = y.shape[0]
        if self.batch_size >= n:
            yield x, y
            return
        order = torch.randperm(n, generator=epoch_generator(self.seed, epoch)).to(self.device)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield x[:, idx], y[idx]  # (T, b, 1), (b,)

    @staticmethod
    def sse(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return ((model(x) - y) ** 2).sum()

    def train_loss(self, model: nn.Module, batch: Any, carry: Any) -> tuple[Tensor, Any, int]:
        x, y = batch
        return self.sse(model, x, y), carry, 1

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str) -> EvalResult:
        x, y = self.splits[split]
        return EvalResult({f"{split}/loss": self.sse(model, x, y).item()})

    def summary(self, model: nn.Module) -> list[str]:
        weights = model.scalars()
        if not weights:
            return []
        return [
            "learned weights: "
            + ", ".join(f"{k.split('/')[-1]} = {v:.4f}" for k, v in weights.items())
        ]
