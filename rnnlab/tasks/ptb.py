"""Penn Treebank word-level language modelling, measured in perplexity.

The vocabulary is built from the training text (one ``<eos>`` per line end; PTB's own
``<unk>`` marks rare words), capped at ``vocab_size``. Each split is one token stream laid
out as parallel streams (:mod:`rnnlab.data.bptt`) and cut into ``bptt``-step windows; the
hidden state carries from window to window and is detached between them (truncated BPTT).

Under data parallelism (``shard``) the training stream is laid out as ``world_size`` times
``batch_size`` streams and each rank trains on its own ``batch_size`` of them: a contiguous
slice of the corpus, with its own hidden state.

``sum_over_time`` back-propagates the window's loss summed over time steps and averaged
over the batch, the convention Zaremba et al. (2014) trained with (their lr 1 and clip 5
assume it); the logged ``train/loss`` is always the per-token mean, so ``train/ppl`` is a
true perplexity either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.cells.base import State
from rnnlab.data.bptt import batchify, num_windows, windows
from rnnlab.data.fetch import corpus_file, load_manifest
from rnnlab.data.vocab import Vocab
from rnnlab.errors import ConfigError, DataError, RnnlabError
from rnnlab.models.lm import LanguageModel
from rnnlab.models.stack import StackSpec
from rnnlab.options import FRACTION, POSITIVE, Options, option
from rnnlab.tasks.base import DataSource, EvalResult, Task, perplexity

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


@dataclass(frozen=True)
class PTBOptions(Options):
    """``task.*`` of ``conf/task/ptb.yaml``."""

    section: ClassVar[str] = "task"

    batch_size: int = option(POSITIVE)
    bptt: int = option(POSITIVE)
    eval_batch_size: int = option(POSITIVE)
    vocab_size: int = option(POSITIVE)
    #: use only the first max_tokens tokens of each split (None: all)
    max_tokens: int | None = option(POSITIVE)
    #: None: the last hidden size
    embedding_size: int | None = option(POSITIVE)
    dropout: float = option(FRACTION)
    tie_weights: bool = option()
    #: uniform init in [-init_range, init_range] (None: PyTorch's defaults)
    init_range: float | None = option(POSITIVE)
    sum_over_time: bool = option()
    data_dir: str | None = option()

    def check(self) -> None:
        smallest = 4 * max(self.batch_size, self.eval_batch_size)
        if self.max_tokens is not None and self.max_tokens < smallest:
            raise ValueError(
                f"task.max_tokens={self.max_tokens} is too small for batch size "
                f"{self.batch_size}; use null (the whole corpus) or a few thousand tokens"
            )


class PennTreebank(Task):
    """Word-level LM on PTB; ``{split}/loss`` is nats per token, ``{split}/ppl`` its exp."""

    name: ClassVar[str] = "ptb"
    Options = PTBOptions
    objective: ClassVar[str] = "val/ppl"
    headline: ClassVar[str] = "ppl"
    eval_splits: ClassVar[tuple[str, ...]] = ("val",)
    final_splits: ClassVar[tuple[str, ...]] = ("test",)

    def __init__(self, options: PTBOptions) -> None:
        super().__init__(options)
        self.batch_size = options.batch_size
        self.bptt = options.bptt
        self.vocab: Vocab | None = None
        self.streams: dict[str, Tensor] = {}  # split -> (T, B) ids on self.device

    # --- data -------------------------------------------------------------------------------

    def path(self, split: str) -> Path:
        return corpus_file(CORPUS, FILES[split], data_dir=self.options.data_dir)

    def get_vocab(self) -> Vocab:
        """The vocabulary: restored from a checkpoint, else built from the training text."""
        if self.vocab is None:
            words = read_tokens(self.path("train"))
            size = self.options.vocab_size
            self.vocab = Vocab.build(words, specials=(UNK, EOS), max_size=size, unk=UNK)
        return self.vocab

    def data_sources(self) -> list[DataSource]:
        """The three PTB files, by the sha256 the manifest verifies them against."""
        manifest = load_manifest(CORPUS)
        contexts = {"train": "train", "val": "validation", "test": "test"}
        sources = []
        for split, context in contexts.items():
            entry = manifest.entry(FILES[split])
            sources.append(DataSource(f"{CORPUS}-{split}", context, entry.sha256, entry.url))
        return sources

    def split_streams(self, split: str) -> Tensor:
        """The (T, B) id streams of ``split``, encoded once and cached on the device."""
        if split not in FILES:
            raise DataError(f"PTB has no split '{split}'", f"Use one of: {', '.join(FILES)}")
        if split not in self.streams:
            vocab = self.get_vocab()
            ids = torch.tensor(
                vocab.encode(read_tokens(self.path(split), max_tokens=self.options.max_tokens))
            )
            if split == "train":  # rank r trains on streams r·B .. (r+1)·B - 1 of W·B
                first = self.rank * self.batch_size
                streams = batchify(ids, self.batch_size * self.world_size)  # (T, W·B)
                streams = streams[:, first : first + self.batch_size].contiguous()  # (T, B)
            else:
                streams = batchify(ids, self.options.eval_batch_size)  # (T, B)
            self.streams[split] = streams.to(self.device)
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
                embedding_size=self.options.embedding_size,
                dropout=self.options.dropout,
                tie_weights=self.options.tie_weights,
                init_range=self.options.init_range,
            )
        except ValueError as exc:
            raise ConfigError(
                f"Cannot build the PTB language model: {exc}",
                "Fix the task.* or cell.* value named above (rnnlab train --cfg job shows them)",
            ) from exc

    def train_batches(self, *, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The epoch's windows in corpus order, with a progress bar (:meth:`Task.bar`)."""
        streams = self.split_streams("train")  # (T, B)
        if self.bptt >= streams.shape[0]:
            raise ConfigError(
                f"task.bptt={self.bptt} is larger than the training data allows: each of the "
                f"{self.batch_size} streams holds only {streams.shape[0]} tokens",
                f"Use task.bptt below {streams.shape[0]} (or a smaller task.batch_size, or more "
                "data via task.max_tokens)",
            )
        return self.bar(
            windows(streams, self.bptt),
            total=num_windows(streams, self.bptt),
            desc=f"epoch {epoch}",
            unit="window",
        )

    def init_carry(self, model: nn.Module) -> Carry:
        return model.init_state(self.batch_size, self.device)

    def train_loss(
        self, model: nn.Module, batch: tuple[Tensor, Tensor], carry: Carry
    ) -> tuple[Tensor, Carry, int]:
        x, y = batch  # (t, B) each
        logits, state = model(x, detach(carry))  # (t, B, V)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.reshape(-1))  # per token
        if self.options.sum_over_time:
            # gradient of the loss summed over the t steps (Zaremba's), value still per token
            steps = x.shape[0]
            loss = loss * steps - (loss * (steps - 1)).detach()
        return loss, state, y.numel()

    def train_metrics(self, mean_loss: float, *, weight: float, seconds: float) -> dict[str, float]:
        return {
            "train/loss": mean_loss,
            "train/ppl": perplexity(mean_loss),
            "tokens_per_s": weight / seconds if seconds > 0 else 0.0,
        }

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str) -> EvalResult:
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
        return EvalResult({f"{split}/loss": mean, f"{split}/ppl": perplexity(mean)})

    def sample_text(
        self, model: nn.Module, *, prime: str | None, steps: int, temperature: float, seed: int
    ) -> str:
        """Sampled words after ``prime`` (default: a sentence start), a line break after
        each ``<eos>``; prime words outside the vocabulary are refused, not mapped to <unk>."""
        vocab = self.get_vocab()
        prime_words = prime.split() if prime else [EOS]
        unknown = [w for w in prime_words if w not in vocab]
        if unknown:
            raise RnnlabError(
                f"Prime word(s) not in the run's vocabulary: {', '.join(unknown)}",
                "Use words the model knows (PTB is lower-case, numbers are written N), or "
                "write <unk> for a rare word; the vocabulary is the run's samples/vocab.txt "
                "artifact",
            )
        model.eval()
        prime_ids = torch.tensor(vocab.encode(prime_words), device=self.device)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        ids = model.sample(prime_ids, steps=steps, temperature=temperature, generator=generator)
        return " ".join(vocab.decode(ids)).replace(f"{EOS} ", f"{EOS}\n")

    def write_artifacts(
        self, model: nn.Module, out_dir: Path, results: dict[str, EvalResult]
    ) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "vocab.txt"
        path.write_text("\n".join(self.get_vocab().itos) + "\n", encoding="utf-8")
        # a fixed-seed sample of the (best) model, read free from a sentence start
        sample = out_dir / "sample.txt"
        text = self.sample_text(model, prime=None, steps=SAMPLE_WORDS, temperature=1.0, seed=0)
        sample.write_text(text + "\n")
        return [path, sample]

    def summary(self, model: nn.Module) -> list[str]:
        return [f"vocabulary: {len(self.get_vocab())} words"]
