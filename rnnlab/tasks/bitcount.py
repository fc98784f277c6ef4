"""Bit counting: regress the number of ones in a binary sequence.

The classic demo for the two-weight linear recurrence s_t = x_t·w_x + s_{t-1}·w_rec: with
20 training sequences of length 10, full batch and a sum-of-squared-errors loss, RMSProp
at lr 1e-3 finds w_x = w_rec = 1 while plain gradient descent at lr 1e-5 still crawls.
A test set of longer sequences (length 50 by default) tells counting from memorising.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from rnnlab.models.seq2one import SequenceRegressor
from rnnlab.models.stack import StackSpec
from rnnlab.tasks.base import Task


def make_bits(n: int, seq_len: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` random binary sequences (T, n, 1), time-major, and their counts (n,)."""
    bits = torch.randint(0, 2, (n, seq_len), generator=generator).float()  # (n, T)
    x = bits.T.unsqueeze(-1).contiguous()  # (T, n, 1)
    return x, bits.sum(dim=1)


class BitCount(Task):
    """Sequence-to-one regression on random bit strings, generated from ``seed``."""

    name: ClassVar[str] = "bitcount"
    final_splits: ClassVar[tuple[str, ...]] = ("test", "test_long")

    def __init__(
        self,
        *,
        seed: int = 0,
        n_train: int = 20,
        seq_len: int = 10,
        batch_size: int | None = None,
        n_val: int = 20,
        n_test: int = 20,
        n_test_long: int = 20,
        test_long_seq_len: int = 50,
    ) -> None:
        for key, value in {
            "n_train": n_train,
            "seq_len": seq_len,
            "n_val": n_val,
            "n_test": n_test,
            "n_test_long": n_test_long,
            "test_long_seq_len": test_long_seq_len,
        }.items():
            if value <= 0:
                raise ValueError(f"task.{key} must be a positive integer, got {value}")
        if batch_size is not None and batch_size <= 0:
            raise ValueError(
                f"task.batch_size must be positive or null (full batch), got {batch_size}"
            )
        self.batch_size = batch_size or n_train
        generator = torch.Generator().manual_seed(seed)
        self.splits: dict[str, tuple[Tensor, Tensor]] = {
            "train": make_bits(n_train, seq_len, generator),
            "val": make_bits(n_val, seq_len, generator),
            "test": make_bits(n_test, seq_len, generator),
            "test_long": make_bits(n_test_long, test_long_seq_len, generator),
        }
        self.seed = seed

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
        # the order depends only on (seed, epoch), so a resumed run sees the same batches
        shuffle = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=shuffle).to(self.device)
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
    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        x, y = self.splits[split]
        return {f"{split}/loss": self.sse(model, x, y).item()}

    def summary(self, model: nn.Module) -> list[str]:
        weights = model.scalars()
        if not weights:
            return []
        return [
            "learned weights: "
            + ", ".join(f"{k.split('/')[-1]} = {v:.4f}" for k, v in weights.items())
        ]
