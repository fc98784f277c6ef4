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
from torch import Tensor, nn

from rnnlab.cells.base import State
from rnnlab.data.bptt import batchify, num_windows, stream_view, windows
from rnnlab.data.cache import cache_dir
from rnnlab.data.corpus import CONTEXTS, SplitFile, fingerprint, resolve_splits
from rnnlab.data.holdout import hold_out
from rnnlab.data.tokenise import LEVELS
from rnnlab.data.tokenised import TokenisedText
from rnnlab.data.vocab import Vocab
from rnnlab.errors import ConfigError, DataError, RnnlabError
from rnnlab.models.adaptive import COVERAGE, check_cutoffs, default_cutoffs
from rnnlab.models.lm import LanguageModel
from rnnlab.models.stack import StackSpec
from rnnlab.options import FRACTION, POSITIVE, Options, one_of, option
from rnnlab.tasks.base import DataSource, EvalResult, ServingSchema, Task, perplexity

SAMPLE_TOKENS = 100
SOFTMAXES = ("full", "adaptive")
#: the longest text a served model scores, in characters (one stream each), and the most
#: tokens it samples for one request row
SERVED_MAX_CHARS = 20_000
SERVED_MAX_GENERATE = 10_000

Carry = list[State]


def as_file_text(text: str) -> str:
    """``text`` as a file holding it is read (rnnlab.data.tokenise.read_blocks): ``\\r\\n`` as
    ``\\n``, and a line end after the last line."""
    text = text.replace("\r\n", "\n")
    return text if text.endswith("\n") else text + "\n"


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
    #: no validation file: hold out this last fraction of train's lines (rnnlab.data.holdout)
    valid_fraction: float | None = option(FRACTION)
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
    #: full: a linear decoder over the vocabulary; adaptive: the adaptive softmax
    softmax: str = option(one_of(*SOFTMAXES))
    #: the adaptive softmax's cluster bounds (None: from the frequency curve of train)
    cutoffs: list[int] | None = option(POSITIVE)
    #: each tail cluster's width is the previous one's divided by this
    div_value: float = option(POSITIVE)
    #: a bias on the adaptive softmax's head (its words and its clusters), as the full
    #: softmax has one
    head_bias: bool = option()

    def check(self) -> None:
        self.check_files()
        self.check_softmax()
        smallest = 4 * max(self.batch_size, self.eval_batch_size)
        if self.max_tokens is not None and self.max_tokens < smallest:
            raise ValueError(
                f"task.max_tokens={self.max_tokens} is too small for batch size "
                f"{self.batch_size}; use null (the whole corpus) or a few thousand tokens"
            )

    def check_softmax(self) -> None:
        if self.softmax == "adaptive" and self.level == "char":
            raise ValueError(
                "task.softmax=adaptive is for word-level models: a character vocabulary is "
                "too small to split into clusters; use task.softmax=full with task.level=char"
            )
        if self.cutoffs is not None and self.softmax != "adaptive":
            raise ValueError(
                f"task.cutoffs={self.cutoffs} is set but task.softmax={self.softmax}; cutoffs "
                "split the adaptive softmax only: add task.softmax=adaptive, or task.cutoffs=null"
            )
        if self.cutoffs is not None:
            check_cutoffs(self.cutoffs, self.vocab_size or math.inf)

    def check_files(self) -> None:
        files = {"task.train": self.train, "task.valid": self.valid, "task.test": self.test}
        named = [k for k, v in files.items() if v]
        held_out = self.valid_fraction is not None
        if self.valid and held_out:
            raise ValueError(
                f"task.valid and task.valid_fraction={self.valid_fraction} are both set; use "
                "the validation file, or hold validation out of train, not both"
            )
        wanted = [k for k in files if not (held_out and k == "task.valid")]
        if named and any(not files[k] for k in wanted):
            missing = ", ".join(k for k in wanted if not files[k])
            raise ValueError(
                f"{', '.join(named)} set but not {missing}; name all three files, or, for a "
                "corpus without a validation file, name train and test and set "
                "task.valid_fraction=0.1 to hold out the last 10% of train for validation"
            )
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
    fixed_shape_steps: ClassVar[bool] = True  # (bptt, batch) windows, the last one shorter
    headline: ClassVar[str] = "ppl"
    eval_splits: ClassVar[tuple[str, ...]] = ("val",)
    final_splits: ClassVar[tuple[str, ...]] = ("test",)
    # ptb_small in bf16 on an AMX Xeon matched fp32's test perplexity (112.11 vs 112.13);
    # provisional until the table in docs/precision.md is measured
    tolerates_bf16: ClassVar[bool] = True
    #: keys runs from before them lacked: the full softmax, and a validation file of their own
    backfill: ClassVar[dict[str, Any]] = {
        "softmax": "full",
        "cutoffs": None,
        "div_value": 4.0,
        # adaptive runs recorded before the head's bias had none (their checkpoints' keys)
        "head_bias": False,
        "valid_fraction": None,
    }

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
        #: the adaptive softmax's cutoffs once known (given, chosen, or from a checkpoint)
        self.cutoffs: list[int] | None = options.cutoffs
        self.cutoffs_reason = "task.cutoffs" if options.cutoffs is not None else ""

    # --- data -------------------------------------------------------------------------------

    def split_files(self) -> dict[str, SplitFile]:
        """The three split files (a registered corpus's verified against its manifest)."""
        if self.splits is None:
            options = self.options
            files = {"train": options.train, "val": options.valid, "test": options.test}
            splits = resolve_splits(
                corpus=options.corpus,
                files=files,
                data_dir=options.data_dir,
                valid_fraction=options.valid_fraction,
            )
            if options.valid_fraction is not None:
                train, val = hold_out(splits["train"], options.valid_fraction, root=self.text.root)
                splits = {"train": train, "val": val, "test": splits["test"]}
                print(f"validation: {val.source}", flush=True)
            self.splits = splits
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
        int32 (4 bytes a token: 100 M tokens hold 400 MB when copied to an accelerator); each
        window is widened to int64 as it is read (:func:`long_windows`)."""
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
            # on the CPU the streams are a view of the memory-mapped cache: windows are read
            # from it as they are needed, and a corpus larger than memory is never copied
            copy = self.device.type != "cpu"
            if split == "train":  # rank r trains on streams r·B .. (r+1)·B - 1 of W·B
                first = self.rank * self.batch_size
                rows = self.batch_size * self.world_size
                streams = self.layout(ids, rows, source, copy=copy)  # (T, W·B)
                streams = streams[:, first : first + self.batch_size]  # (T, B) view
            else:
                streams = self.layout(ids, self.options.eval_batch_size, source, copy=copy)
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
        state: dict[str, Any] = {"vocab": self.get_vocab().state_dict()}
        if self.options.softmax == "adaptive":  # the model's shape: eval needs no train text
            state["cutoffs"] = self.get_cutoffs()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "vocab" in state:
            self.vocab = Vocab.from_state_dict(state["vocab"])
            self.streams = {}
        if state.get("cutoffs") is not None:
            self.cutoffs, self.cutoffs_reason = list(state["cutoffs"]), "the checkpoint"

    # --- the adaptive softmax ---------------------------------------------------------------

    def get_cutoffs(self) -> list[int]:
        """The adaptive softmax's cutoffs: ``task.cutoffs``, else chosen from how often each
        word occurs in train (:func:`~rnnlab.models.adaptive.default_cutoffs`); checked
        against the vocabulary (a ConfigError naming the fix)."""
        vocab_size = len(self.get_vocab())
        if self.cutoffs is None:
            self.cutoffs = default_cutoffs(self.train_counts(vocab_size))
            self.cutoffs_reason = (
                "default: the words that cover "
                + " / ".join(f"{share:.0%}" for share in COVERAGE)
                + " of train"
            )
            if not self.cutoffs:  # too few words to split: one cluster of the rarest
                self.cutoffs = [max(1, vocab_size // 2)]
        try:
            check_cutoffs(self.cutoffs, vocab_size)
        except ValueError as exc:
            raise ConfigError(
                f"Cannot build the adaptive softmax: {exc}",
                f"Give task.cutoffs below {vocab_size}, or task.cutoffs=null to choose them "
                "from the vocabulary's frequency curve",
            ) from exc
        return self.cutoffs

    def train_counts(self, vocab_size: int) -> Tensor:
        """(V,) how often each id occurs in the training ids, counted in chunks (they may be
        memory-mapped and larger than memory)."""
        ids = self.text.ids(self.split_files()["train"], self.get_vocab())
        ids, chunk = ids[: self.options.max_tokens], 1 << 24
        counts = torch.zeros(vocab_size, dtype=torch.long)
        for start in range(0, ids.numel(), chunk):
            counts += torch.bincount(ids[start : start + chunk].long(), minlength=vocab_size)
        return counts

    def tags(self) -> dict[str, str]:
        """The softmax, and for the adaptive one its cutoffs and where they came from."""
        if self.options.softmax != "adaptive":
            return {"softmax": "full"}
        cutoffs = ",".join(map(str, self.get_cutoffs()))
        return {"softmax": "adaptive", "cutoffs": cutoffs, "cutoffs_reason": self.cutoffs_reason}

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
                cutoffs=self.get_cutoffs() if self.options.softmax == "adaptive" else None,
                div_value=self.options.div_value,
                head_bias=self.options.head_bias,
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
        if self.options.softmax == "adaptive":
            self.get_cutoffs()

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

    def step_positions(self) -> int:
        return self.batch_size * self.bptt  # one (bptt, batch) window

    def init_carry(self, model: nn.Module) -> Carry:
        return model.init_state(self.batch_size, self.device)

    def train_loss(
        self, model: nn.Module, batch: tuple[Tensor, Tensor], carry: Carry
    ) -> tuple[Tensor, Carry, int]:
        x, y = batch  # (t, B) each
        losses, state = model(x, detach(carry), targets=y)  # (t, B) nats
        loss = losses.mean()  # per token
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
            losses, state = model(x, state, targets=y)  # (t, B) nats, exact either softmax
            total += losses.double().sum()
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
        so the text is never in memory and the ids need not be. A file too short for that
        layout is scored as one stream, as a served model scores a text (:meth:`score_texts`),
        and the result says so."""
        model.eval()
        found = fingerprint(path)
        ids = self.text.ids(found, self.get_vocab())
        rows = self.options.eval_batch_size  # (an empty file was refused by text.ids)
        notes = []
        if ids.numel() // rows < 2:  # fewer than the 2 steps a stream needs (data.bptt)
            start = self.get_vocab().encode(self.level.start)
            stream = torch.cat([torch.tensor(start, dtype=ids.dtype), ids]).unsqueeze(1)  # (N+1, 1)
            total, count = self.column_log_probs(model, stream, [stream.shape[0]])
            mean = -total[0] / count[0]
            notes.append(
                f"{path} holds {ids.numel()} {self.level.unit}, too few for the run's {rows} "
                f"parallel streams: scored as one stream, every {self.level.unit[:-1]} after "
                "a line start (as a served model scores a text)"
            )
        else:
            streams = self.layout(ids, rows, found, copy=False)
            mean = self.mean_loss(model, streams, desc=f"eval {name}")
        figures = self.figures(f"eval/{name}", mean, self.unk_share(ids))
        return EvalResult(figures, notes=notes)

    @torch.no_grad()
    def column_log_probs(
        self, model: nn.Module, streams: Tensor, lengths: list[int]
    ) -> tuple[list[float], list[int]]:
        """The summed log-probability of each column's tokens after its first, and their
        number: (T, B) ids whose column b holds ``lengths[b]`` real ids, then padding."""
        batch = streams.shape[1]
        state = model.init_state(batch, self.device)
        real = torch.tensor(lengths, device=self.device)  # (B,)
        total = torch.zeros(batch, dtype=torch.float64, device=self.device)  # (B,)
        for i, (x, y) in enumerate(self.long_windows(streams)):
            losses, state = model(x, state, targets=y)  # (t, B) nats, exact for any softmax
            steps = x.shape[0]
            logp = -losses.float()  # (t, B)
            target = i * self.bptt + 1 + torch.arange(steps, device=self.device)  # (t,)
            keep = target.unsqueeze(1) < real.unsqueeze(0)  # (t, B): a real next token
            total += torch.where(keep, logp, 0.0).sum(dim=0).double()
        return total.tolist(), [n - 1 for n in lengths]

    @torch.no_grad()
    def score_texts(self, model: nn.Module, texts: list[str]) -> list[tuple[float, int]]:
        """(log-probability, tokens) of each text, scored as a file holding it is by
        ``rnnlab eval --text`` when too short for the parallel streams: its lines (each ended
        as a file's are) after a line start, every token scored. Texts are scored in batches
        of ``eval_batch_size``, sorted by length."""
        from rnnlab.data.buckets import pad, sorted_batches

        model.eval()
        vocab = self.get_vocab()
        start = vocab.encode(self.level.start)
        ids = [start + vocab.encode(self.level.tokens(as_file_text(t))) for t in texts]
        out: list[tuple[float, int]] = [(0.0, 0)] * len(texts)
        lengths = [len(i) for i in ids]
        for idx in sorted_batches(lengths, batch_size=self.options.eval_batch_size):
            streams, _ = pad([ids[i] for i in idx], pad_index=0)  # (T, b)
            total, count = self.column_log_probs(
                model, streams.to(self.device), [lengths[i] for i in idx]
            )
            for i, log_prob, tokens in zip(idx, total, count, strict=True):
                out[i] = (log_prob, tokens)
        return out

    # -- serving (rnnlab.tasks.base.Serves) ----------------------------------------------
    def serving_schema(self) -> ServingSchema:
        """Texts in; their log-probability, tokens and perplexity out, or (``generate=N``)
        N sampled tokens after each text."""
        return ServingSchema(
            column="text",
            outputs={
                "log_prob": "double",
                "tokens": "long",
                "ppl": "double",
                "generated": "string",
            },
            params={"generate": 0, "temperature": 1.0, "seed": 0},
            example=[self.example_line()],
            max_chars=SERVED_MAX_CHARS,
        )

    def example_line(self) -> str:
        """The first line of the validation text (30 tokens at most), for the input example."""
        ids = self.split_streams("val")[:200, 0].tolist()  # stream 0: where the split starts
        line: list[str] = []
        for token in self.get_vocab().decode(ids):
            if token != self.level.line_end:
                line.append(token)
            elif line:
                break
        return self.level.join(line[:30])

    def serve(
        self, model: nn.Module, rows: list[str], params: dict[str, Any]
    ) -> dict[str, list[Any]]:
        steps, temperature = params["generate"], params["temperature"]
        if not 0 <= steps <= SERVED_MAX_GENERATE:
            raise RnnlabError(
                f"generate={steps} is outside 0..{SERVED_MAX_GENERATE}",
                "Use generate=0 to score the texts, or N > 0 to sample N tokens after each",
            )
        if steps:
            if not (math.isfinite(temperature) and temperature > 0):
                raise RnnlabError(
                    f"temperature must be a positive number, got {temperature}",
                    "Use 1.0 for the model's own distribution, lower (0.7) for safer text",
                )
            seed = params["seed"]
            if seed < 0:
                raise RnnlabError(f"seed must be 0 or more, got {seed}", "Use seed=0, 1, ...")
            return {
                "generated": [
                    self.sample_text(
                        model, prime=row, steps=steps, temperature=temperature, seed=seed
                    )
                    for row in rows
                ]
            }
        scored = self.score_texts(model, rows)
        return {
            "log_prob": [log_prob for log_prob, _ in scored],
            "tokens": [tokens for _, tokens in scored],
            "ppl": [perplexity(-log_prob / max(tokens, 1)) for log_prob, tokens in scored],
        }

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
