"""Language modelling on any text corpus, at word or character level, in perplexity.

The corpus is a registered one (``ptb``: fetched and sha256-verified), a folder holding
``train.txt``, ``valid.txt`` and ``test.txt``, or three files named one by one
(:mod:`rnnlab.data.corpus`). It is tokenised once, streaming, into int32 ids and cached by
digest and options (:mod:`rnnlab.data.tokenised`); the vocabulary comes from train, capped
by ``vocab_size`` and ``min_freq``, and the share of ``<unk>`` in each split is a metric.
``task=ptb`` is this task with ``corpus: ptb`` (``conf/task/ptb.yaml``).

Each split is one token stream laid out as parallel streams (:mod:`rnnlab.data.bptt`) and
cut into ``bptt``-step windows; the hidden state carries from window to window and is
detached between them (truncated BPTT). ``sum_over_time`` back-propagates the window's loss
summed over time steps and averaged over the batch, the convention Zaremba et al. (2014)
trained with (their lr 1 and clip 5 assume it); the logged ``train/loss`` is always the
per-token mean, so ``train/ppl`` is a true perplexity either way. At character level,
``{split}/bpc`` (bits per character, the loss over ln 2) is logged beside loss and ppl.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.cells.base import State
from rnnlab.data.bptt import batchify, num_windows, stream_view, windows
from rnnlab.data.cache import cache_dir
from rnnlab.data.corpus import CONTEXTS, SplitFile, fingerprint, resolve_splits
from rnnlab.data.tokenise import LEVELS
from rnnlab.data.tokenised import TokenisedText
from rnnlab.data.vocab import Vocab
from rnnlab.errors import ConfigError, DataError, RnnlabError
from rnnlab.models.lm import LanguageModel
from rnnlab.models.stack import StackSpec
from rnnlab.options import FRACTION, POSITIVE, Options, one_of, option
from rnnlab.tasks.base import DataSource, EvalResult, Task, perplexity

SAMPLE_TOKENS = 100

Carry = list[State]


def detach(state: Carry) -> Carry:
    """The same state cut from the graph of the window that produced it."""
    return [tuple(s.detach() for s in layer) for layer in state]


@dataclass(frozen=True)
class LMOptions(Options):
    """``task.*`` of ``conf/task/lm.yaml`` (and ``ptb.yaml``, which is lm with corpus ptb)."""

    section: ClassVar[str] = "task"

    #: a registered corpus (ptb) or a folder with train.txt, valid.txt, test.txt
    corpus: str | None = option()
    #: or the three files, named one by one
    train: str | None = option()
    valid: str | None = option()
    test: str | None = option()
    level: str = option(one_of(*LEVELS))
    #: the most frequent tokens of train, specials included (None: all)
    vocab_size: int | None = option(POSITIVE)
    min_freq: int = option(POSITIVE)
    #: where token ids and vocabularies are cached (rnnlab.data.cache.cache_dir)
    cache_dir: str | None = option()
    batch_size: int = option(POSITIVE)
    bptt: int = option(POSITIVE)
    eval_batch_size: int = option(POSITIVE)
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
        files = {"task.train": self.train, "task.valid": self.valid, "task.test": self.test}
        named = [k for k, v in files.items() if v]
        if named and len(named) < 3:
            missing = ", ".join(k for k, v in files.items() if not v)
            raise ValueError(f"{', '.join(named)} set but not {missing}; name all three files")
        if named and self.corpus:
            raise ValueError(
                f"task.corpus={self.corpus} and task.train/valid/test are both set; use one "
                "(task.corpus=null to read the three files)"
            )
        if not named and not self.corpus:
            raise ValueError(
                "no corpus: set task.corpus=DIR (a folder with train.txt, valid.txt, test.txt), "
                "task.corpus=ptb, or task.train=... task.valid=... task.test=..."
            )
        smallest = 4 * max(self.batch_size, self.eval_batch_size)
        if self.max_tokens is not None and self.max_tokens < smallest:
            raise ValueError(
                f"task.max_tokens={self.max_tokens} is too small for batch size "
                f"{self.batch_size}; use null (the whole corpus) or a few thousand tokens"
            )


class LanguageModelTask(Task):
    """Word- or character-level LM; ``{split}/loss`` is nats per token, ``{split}/ppl`` its
    exp, ``{split}/unk_share`` the share of ``<unk>`` in the split (and ``{split}/bpc`` at
    character level)."""

    name: ClassVar[str] = "lm"
    causal: ClassVar[str | None] = (
        "a language model predicts each token from the ones before it (a backward direction "
        "would read the answer)"
    )
    Options = LMOptions
    objective: ClassVar[str] = "val/ppl"
    headline: ClassVar[str] = "ppl"
    eval_splits: ClassVar[tuple[str, ...]] = ("val",)
    final_splits: ClassVar[tuple[str, ...]] = ("test",)

    def __init__(self, options: LMOptions) -> None:
        super().__init__(options)
        self.batch_size = options.batch_size
        self.bptt = options.bptt
        self.level = LEVELS[options.level]
        #: the metric ``rnnlab eval`` prints: bits per character for a character model
        self.headline = "bpc" if options.level == "char" else "ppl"
        self.text = TokenisedText(
            level=options.level,
            vocab_size=options.vocab_size,
            min_freq=options.min_freq,
            root=cache_dir(options.cache_dir),
        )
        self.vocab: Vocab | None = None
        self.splits: dict[str, SplitFile] | None = None
        self.streams: dict[str, Tensor] = {}  # split -> (T, B) ids on self.device
        self.unk_shares: dict[str, float] = {}

    # --- data -------------------------------------------------------------------------------

    def split_files(self) -> dict[str, SplitFile]:
        """The three split files (a registered corpus's verified against its manifest)."""
        if self.splits is None:
            options = self.options
            files = {"train": options.train, "val": options.valid, "test": options.test}
            self.splits = resolve_splits(
                corpus=options.corpus, files=files, data_dir=options.data_dir
            )
        return self.splits

    def get_vocab(self) -> Vocab:
        """The vocabulary: restored from a checkpoint, else built from the training text."""
        if self.vocab is None:
            self.vocab = self.text.vocab(self.split_files()["train"])
        return self.vocab

    def data_sources(self) -> list[DataSource]:
        """The three splits, by the sha256 of their files (a registered corpus's: the
        manifest's, which the files are verified against)."""
        return [
            DataSource(f"{f.corpus}-{split}", CONTEXTS[split], f.digest, f.source)
            for split, f in self.split_files().items()
        ]

    def layout(self, ids: Tensor, rows: int, source: SplitFile, *, copy: bool = True) -> Tensor:
        """(N,) int32 ids -> (T, B) int32 streams on the device (``copy=False``: a view of
        ``ids`` as they are, read window by window); too few is a DataError. The streams stay
        int32 (4 bytes a token: 100 M tokens hold 400 MB); each window is widened to int64 as
        it is read (:func:`long_windows`)."""
        try:
            if not copy:
                return stream_view(ids, rows)  # (T, B) view
            return batchify(ids, rows).to(self.device)  # (T, B)
        except ValueError as exc:
            raise DataError(
                f"{source.path} is too short for {rows} parallel streams: {exc}",
                "Use more text, or a smaller task.batch_size / task.eval_batch_size",
            ) from exc

    def split_streams(self, split: str) -> Tensor:
        """The (T, B) id streams of ``split``, encoded once and cached on the device."""
        if split not in ("train", "val", "test"):
            raise DataError(
                f"A language model has no split '{split}'", "Use one of: train, val, test"
            )
        if split not in self.streams:
            source = self.split_files()[split]
            ids = self.text.ids(source, self.get_vocab())[: self.options.max_tokens]
            self.unk_shares[split] = self.unk_share(ids)
            if split == "train":  # rank r trains on streams r·B .. (r+1)·B - 1 of W·B
                first = self.rank * self.batch_size
                streams = self.layout(ids, self.batch_size * self.world_size, source)  # (T, W·B)
                streams = streams[:, first : first + self.batch_size].contiguous()  # (T, B)
            else:
                streams = self.layout(ids, self.options.eval_batch_size, source)  # (T, B)
            self.streams[split] = streams
        return self.streams[split]

    def unk_share(self, ids: Tensor) -> float:
        """The share of ``<unk>`` in ``ids``, counted in chunks (ids may be memory-mapped)."""
        unk, chunk = self.get_vocab().unk_index, 1 << 24
        found = sum(int((ids[i : i + chunk] == unk).sum()) for i in range(0, ids.numel(), chunk))
        return found / max(ids.numel(), 1)

    def to(self, device: torch.device) -> LanguageModelTask:
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
                f"Cannot build the language model: {exc}",
                "Fix the task.* or cell.* value named above (rnnlab train --cfg job shows them)",
            ) from exc

    def train_batches(self, *, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The epoch's windows in corpus order, with a progress bar (:meth:`Task.bar`)."""
        streams = self.split_streams("train")  # (T, B)
        self.check_bptt(streams)
        return self.bar(
            self.long_windows(streams),
            total=num_windows(streams, self.bptt),
            desc=f"epoch {epoch}",
            unit="window",
        )

    def long_windows(self, streams: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
        """:func:`windows` of (T, B) int32 ``streams``, each (t, B) as int64 on the device
        (one window's copy: the losses index with int64 targets)."""
        for x, y in windows(streams, self.bptt):
            x = x.to(self.device, torch.long).contiguous()  # (t, B)
            yield x, y.to(self.device, torch.long).contiguous()  # (t, B) each

    def prepare(self) -> None:
        for split in ("train", "val", "test"):
            self.split_streams(split)
        self.check_bptt(self.split_streams("train"))

    def check_bptt(self, streams: Tensor) -> None:
        """``task.bptt`` must leave at least one target in each (T, B) training stream."""
        if self.bptt >= streams.shape[0]:
            ranks = f" (of {self.world_size} ranks' streams)" if self.world_size > 1 else ""
            raise ConfigError(
                f"task.bptt={self.bptt} is larger than the training data allows: each of the "
                f"{self.batch_size} streams{ranks} holds only {streams.shape[0]} tokens",
                f"Use task.bptt below {streams.shape[0]} (or a smaller task.batch_size, or more "
                "data via task.max_tokens)",
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
        self.split_streams("train")  # the share of <unk> is known once train is encoded
        return {
            "train/loss": mean_loss,
            "train/ppl": perplexity(mean_loss),
            "train/unk_share": self.unk_shares["train"],
            "tokens_per_s": weight / seconds if seconds > 0 else 0.0,
        }

    def figures(self, prefix: str, mean: float, unk_share: float) -> dict[str, float]:
        """loss, ppl, the share of ``<unk>`` (and bpc at character level) under ``prefix``."""
        metrics = {
            f"{prefix}/loss": mean,
            f"{prefix}/ppl": perplexity(mean),
            f"{prefix}/unk_share": unk_share,
        }
        if self.headline == "bpc":
            metrics[f"{prefix}/bpc"] = mean / math.log(2)
        return metrics

    @torch.no_grad()
    def mean_loss(self, model: nn.Module, streams: Tensor, *, desc: str) -> float:
        """Exact token-weighted mean loss over every window of (T, B) ``streams``."""
        state = model.init_state(streams.shape[1], self.device)
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        count = 0
        bar = self.bar(
            self.long_windows(streams),
            total=num_windows(streams, self.bptt),
            desc=desc,
            unit="window",
        )
        for x, y in bar:
            logits, state = model(x, state)  # (t, B, V)
            loss = F.cross_entropy(
                logits.view(-1, logits.shape[-1]).float(), y.reshape(-1), reduction="sum"
            )
            total += loss.double()
            count += y.numel()
        return (total / count).item()

    def evaluate(self, model: nn.Module, split: str) -> EvalResult:
        """Exact token-weighted loss and perplexity over every window of ``split``."""
        streams = self.split_streams(split)
        mean = self.mean_loss(model, streams, desc=f"eval {split}")
        return EvalResult(self.figures(split, mean, self.unk_shares[split]))

    def text_source(self, path: Path, *, name: str) -> DataSource:
        """A file to score, as the run records it (an MLflow dataset input)."""
        found = fingerprint(path)
        return DataSource(name, "evaluation", found.digest, found.source)

    def score_text(self, model: nn.Module, path: Path, *, name: str) -> EvalResult:
        """``eval/NAME/*`` of ``model`` on a whole text file, laid out and scored exactly as
        a test split is (every token, ``eval_batch_size`` streams). The ids are streamed
        from the file into the token cache and read back memory-mapped, one window at a time,
        so the text is never in memory and the ids need not be."""
        model.eval()
        found = fingerprint(path)
        ids = self.text.ids(found, self.get_vocab())
        streams = self.layout(ids, self.options.eval_batch_size, found, copy=False)
        mean = self.mean_loss(model, streams, desc=f"eval {name}")
        return EvalResult(self.figures(f"eval/{name}", mean, self.unk_share(ids)))

    def sample_text(
        self, model: nn.Module, *, prime: str | None, steps: int, temperature: float, seed: int
    ) -> str:
        """Sampled tokens after ``prime`` (default: a line start); prime tokens outside the
        vocabulary are refused, not mapped to <unk>."""
        vocab = self.get_vocab()
        prime_tokens = self.level.split_prime(prime) if prime else self.level.start
        unknown = [w for w in prime_tokens if w not in vocab]
        if unknown:
            raise RnnlabError(
                f"Prime {self.level.unit} not in the run's vocabulary: {', '.join(unknown)}",
                "Use words the model knows (PTB is lower-case, numbers are written N), or "
                "write <unk> for a rare word; the vocabulary is the run's samples/vocab.txt "
                "artifact",
            )
        model.eval()
        prime_ids = torch.tensor(vocab.encode(prime_tokens), device=self.device)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        ids = model.sample(prime_ids, steps=steps, temperature=temperature, generator=generator)
        return self.level.join(vocab.decode(ids))

    def write_artifacts(
        self, model: nn.Module, out_dir: Path, results: dict[str, EvalResult]
    ) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "vocab.txt"
        # one token per line; a character model's newline token is written as \\n
        tokens = [t.replace("\n", "\\n") for t in self.get_vocab().itos]
        path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
        # a fixed-seed sample of the (best) model, read free from a line start
        sample = out_dir / "sample.txt"
        text = self.sample_text(model, prime=None, steps=SAMPLE_TOKENS, temperature=1.0, seed=0)
        sample.write_text(text + "\n", encoding="utf-8")
        return [path, sample]

    def summary(self, model: nn.Module) -> list[str]:
        shares = ", ".join(f"{k} {v:.2%}" for k, v in self.unk_shares.items())
        cached = f", {self.text.cache_hits} cache hit(s)" if self.text.cache_hits else ""
        return [
            f"vocabulary: {len(self.get_vocab())} {self.level.unit}; <unk> share: {shares}",
            f"tokenised in {self.text.seconds:.2f} s{cached}",
        ]
