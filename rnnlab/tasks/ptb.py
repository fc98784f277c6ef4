"""Penn Treebank word-level language modelling, measured in perplexity.

The vocabulary is built from the training text (one ``<eos>`` per line end; PTB's own
``<unk>`` marks rare words), capped at ``vocab_size``. Each split is one token stream laid
out as parallel streams (:mod:`rnnlab.data.bptt`) and cut into ``bptt``-step windows; the
hidden state carries from window to window and is detached between them (truncated BPTT).

``sum_over_time`` back-propagates the window's loss summed over time steps and averaged
over the batch, the convention Zaremba et al. (2014) trained with (their lr 1 and clip 5
assume it); the logged ``train/loss`` is always the per-token mean, so ``train/ppl`` is a
true perplexity either way.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.cells.base import State
from rnnlab.data.bptt import batchify, num_windows, windows
from rnnlab.data.fetch import corpus_file
from rnnlab.data.vocab import Vocab
from rnnlab.errors import ConfigError, DataError
from rnnlab.models.lm import LanguageModel
from rnnlab.models.stack import StackSpec
from rnnlab.tasks.base import Task

CORPUS = "ptb"
EOS = "<eos>"
UNK = "<unk>"
SAMPLE_WORDS = 100
FILES = {"train": "ptb.train.txt", "val": "ptb.valid.txt", "test": "ptb.test.txt"}

Carry = list[State]


def read_tokens(path: Path, *, max_tokens: int | None = None) -> list[str]:
    """The words of ``path`` with ``<eos>`` after each line, at most ``max_tokens`` of them."""
    tokens: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            tokens.extend(line.split())
            tokens.append(EOS)
            if max_tokens is not None and len(tokens) >= max_tokens:
                return tokens[:max_tokens]
    return tokens


def detach(state: Carry) -> Carry:
    """The same state cut from the graph of the window that produced it."""
    return [tuple(s.detach() for s in layer) for layer in state]


class PennTreebank(Task):
    """Word-level LM on PTB; ``{split}/loss`` is nats per token, ``{split}/ppl`` its exp."""

    name: ClassVar[str] = "ptb"
    objective: ClassVar[str] = "val/ppl"
    headline: ClassVar[str] = "ppl"
    eval_splits: ClassVar[tuple[str, ...]] = ("val",)
    final_splits: ClassVar[tuple[str, ...]] = ("test",)

    def __init__(
        self,
        *,
        batch_size: int = 20,
        bptt: int = 35,
        eval_batch_size: int = 10,
        vocab_size: int = 10000,
        max_tokens: int | None = None,
        embedding_size: int | None = None,
        dropout: float = 0.0,
        tie_weights: bool = False,
        init_range: float | None = 0.1,
        sum_over_time: bool = True,
        data_dir: str | None = None,
    ) -> None:
        for key, value in {
            "batch_size": batch_size,
            "bptt": bptt,
            "eval_batch_size": eval_batch_size,
            "vocab_size": vocab_size,
        }.items():
            if value <= 0:
                raise ValueError(f"task.{key} must be a positive integer, got {value}")
        if max_tokens is not None and max_tokens < 4 * max(batch_size, eval_batch_size):
            raise ValueError(
                f"task.max_tokens={max_tokens} is too small for batch size {batch_size}; "
                "use null (the whole corpus) or a few thousand tokens"
            )
        self.batch_size = batch_size
        self.bptt = bptt
        self.eval_batch_size = eval_batch_size
        self.vocab_size = vocab_size
        self.max_tokens = max_tokens
        self.embedding_size = embedding_size
        self.dropout = dropout
        self.tie_weights = tie_weights
        self.init_range = init_range
        self.sum_over_time = sum_over_time
        self.data_dir = data_dir
        self.vocab: Vocab | None = None
        self.streams: dict[str, Tensor] = {}  # split -> (T, B) ids on self.device

    # --- data -------------------------------------------------------------------------------

    def path(self, split: str) -> Path:
        return corpus_file(CORPUS, FILES[split], data_dir=self.data_dir)

    def get_vocab(self) -> Vocab:
        """The vocabulary: restored from a checkpoint, else built from the training text."""
        if self.vocab is None:
            words = read_tokens(self.path("train"))
            self.vocab = Vocab.build(words, specials=(UNK, EOS), max_size=self.vocab_size, unk=UNK)
        return self.vocab

    def split_streams(self, split: str) -> Tensor:
        """The (T, B) id streams of ``split``, encoded once and cached on the device."""
        if split not in FILES:
            raise DataError(f"PTB has no split '{split}'", f"Use one of: {', '.join(FILES)}")
        if split not in self.streams:
            vocab = self.get_vocab()
            ids = torch.tensor(
                vocab.encode(read_tokens(self.path(split), max_tokens=self.max_tokens))
            )
            rows = self.batch_size if split == "train" else self.eval_batch_size
            self.streams[split] = batchify(ids, rows).to(self.device)  # (T, B)
        return self.streams[split]

    def to(self, device: torch.device) -> PennTreebank:
        self.device = device
        self.streams = {k: v.to(device) for k, v in self.streams.items()}
        return self

    def state_dict(self) -> dict[str, Any]:
        return {"vocab": self.get_vocab().state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "vocab" in state:
            self.vocab = Vocab.from_state_dict(state["vocab"])
            self.streams = {}

    # --- model and training -----------------------------------------------------------------

    def build_model(self, *, stack: StackSpec) -> LanguageModel:
        try:
            return LanguageModel(
                stack=stack,
                vocab_size=len(self.get_vocab()),
                embedding_size=self.embedding_size,
                dropout=self.dropout,
                tie_weights=self.tie_weights,
                init_range=self.init_range,
            )
        except ValueError as exc:
            raise ConfigError(
                f"Cannot build the PTB language model: {exc}",
                "Fix the task.* or cell.* value named above (rnnlab train --cfg job shows them)",
            ) from exc

    def train_batches(self, *, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The epoch's windows in corpus order, with a progress bar on a terminal."""
        from tqdm.auto import tqdm

        streams = self.split_streams("train")  # (T, B)
        if self.bptt >= streams.shape[0]:
            raise ConfigError(
                f"task.bptt={self.bptt} is larger than the training data allows: each of the "
                f"{self.batch_size} streams holds only {streams.shape[0]} tokens",
                f"Use task.bptt below {streams.shape[0]} (or a smaller task.batch_size, or more "
                "data via task.max_tokens)",
            )
        return tqdm(
            windows(streams, self.bptt),
            total=num_windows(streams, self.bptt),
            desc=f"epoch {epoch}",
            unit="window",
            disable=not sys.stderr.isatty(),
            leave=False,
            dynamic_ncols=True,
        )

    def init_carry(self, model: nn.Module) -> Carry:
        return model.init_state(self.batch_size, self.device)

    def train_loss(
        self, model: nn.Module, batch: tuple[Tensor, Tensor], carry: Carry
    ) -> tuple[Tensor, Carry, int]:
        x, y = batch  # (t, B) each
        logits, state = model(x, detach(carry))  # (t, B, V)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.reshape(-1))  # per token
        if self.sum_over_time:
            # gradient of the loss summed over the t steps (Zaremba's), value still per token
            steps = x.shape[0]
            loss = loss * steps - (loss * (steps - 1)).detach()
        return loss, state, y.numel()

    def train_metrics(self, mean_loss: float, *, weight: float, seconds: float) -> dict[str, float]:
        return {
            "train/loss": mean_loss,
            "train/ppl": math.exp(min(mean_loss, 700.0)),
            "tokens_per_s": weight / seconds if seconds > 0 else 0.0,
        }

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        """Exact token-weighted loss and perplexity over every window of ``split``."""
        streams = self.split_streams(split)
        state = model.init_state(streams.shape[1], self.device)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        count = 0
        for x, y in windows(streams, self.bptt):
            logits, state = model(x, state)  # (t, B, V)
            loss = F.cross_entropy(
                logits.view(-1, logits.shape[-1]).float(), y.reshape(-1), reduction="sum"
            )
            total += loss.double()
            count += y.numel()
        mean = (total / count).item()
        return {f"{split}/loss": mean, f"{split}/ppl": math.exp(min(mean, 700.0))}

    def write_artifacts(self, model: nn.Module, out_dir: Path) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        vocab = self.get_vocab()
        path = out_dir / "vocab.txt"
        path.write_text("\n".join(vocab.itos) + "\n", encoding="utf-8")
        # a fixed-seed sample of the (best) model, read free from a sentence start
        model.eval()
        start = torch.tensor([vocab.index(EOS)], device=self.device)
        generator = torch.Generator(device=self.device).manual_seed(0)
        ids = model.sample(start, steps=SAMPLE_WORDS, generator=generator)
        sample = out_dir / "sample.txt"
        sample.write_text(" ".join(vocab.decode(ids)).replace(f"{EOS} ", f"{EOS}\n") + "\n")
        return [path, sample]

    def summary(self, model: nn.Module) -> list[str]:
        return [f"vocabulary: {len(self.get_vocab())} words"]
