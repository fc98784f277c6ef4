"""The Task interface the training loop drives, and what every task shares.

A task is built from its options (a frozen dataclass of its ``task.*`` keys, validated by
:mod:`rnnlab.options`; the defaults live in ``conf/task/<name>.yaml``). It builds its model
from a :class:`~rnnlab.models.stack.StackSpec`, yields training batches, computes the loss of
one batch (optionally threading a ``carry`` such as a truncated-BPTT hidden state from batch
to batch), and evaluates a model on a split into an :class:`EvalResult`: named metrics
(``val/loss``, ``test/ppl``, ...; the names are the MLflow keys), outputs worth keeping as
artifacts, and tags. Evaluation returns everything it found; a task caches nothing of it.

What a task can do beyond training is declared by the protocols at the end of this module
(:class:`Samples`, :class:`Translates`, :class:`ShowsAttention`, :class:`ScoresText`,
:class:`DrawsFigures`, :class:`Serves`); commands check them with
``isinstance`` rather than guessing from attributes.
"""

from __future__ import annotations

import abc
import math
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from rnnlab.data.source import DataSource
from rnnlab.errors import ConfigError
from rnnlab.models.stack import StackSpec
from rnnlab.options import Options

#: perplexity is reported as exp(loss) with the loss capped here, so a diverged loss still
#: gives a finite number (exp(709) is the largest float64)
MAX_LOG_PPL = 700.0


def perplexity(loss: float) -> float:
    """exp(``loss``) for a loss in nats, capped at exp(:data:`MAX_LOG_PPL`)."""
    return math.exp(min(loss, MAX_LOG_PPL))


def progress_enabled(setting: bool | None) -> bool:
    """Progress bars are on when asked for, or (``None``) when stderr is a terminal."""
    return sys.stderr.isatty() if setting is None else setting


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The data-order generator of one epoch: a function of (seed, epoch) only, so a run
    resumed mid-training sees exactly the batches it would have seen."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


@dataclass
class EvalResult:
    """What evaluating a model on one split found."""

    #: ``<split>/<metric>`` -> value
    metrics: dict[str, float]
    #: per-example outputs worth saving (e.g. ``hypotheses``: one detokenized line each)
    outputs: dict[str, list[str]] = field(default_factory=dict)
    #: run tags the evaluation determines (e.g. the sacreBLEU signature)
    tags: dict[str, str] = field(default_factory=dict)
    #: arrays worth keeping for artifacts (e.g. ``forecast``: every test forecast), not logged
    arrays: dict[str, Any] = field(default_factory=dict)
    #: what the user should know about how it was computed (printed, not logged)
    notes: list[str] = field(default_factory=list)


def digest_of(*parts: str) -> str:
    """One sha256 hex digest of several strings (file digests, generator settings)."""
    import hashlib

    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


@dataclass
class AttentionMap:
    """The attention weights of one decoded sentence, for a heatmap."""

    title: str
    source: list[str]
    target: list[str]
    weights: Any  # (T, S) array: target step x source token


@dataclass
class ForecastFigure:
    """Forecasts of one channel over a few windows, against the actual values."""

    title: str
    channel: str
    #: one entry per window: (past x, past y, future x, actual y, forecast y) sequences
    windows: list[tuple[Any, Any, Any, Any, Any]]


@dataclass
class ConfusionFigure:
    """A confusion matrix: ``counts[i, j]`` examples of class ``labels[i]`` predicted as
    ``labels[j]``."""

    title: str
    labels: list[str]
    counts: Any  # (K, K) integer array


class Task(abc.ABC):
    """Base class for a task: subclasses set :attr:`Options` and take one options object."""

    name: ClassVar[str]
    #: the dataclass of this task's ``task.*`` keys
    Options: ClassVar[type[Options]]
    #: the metric a sweep minimises and that picks the best checkpoint
    objective: ClassVar[str] = "val/loss"
    #: splits evaluated every epoch, and once at the end with the best model
    eval_splits: ClassVar[tuple[str, ...]] = ("val",)
    final_splits: ClassVar[tuple[str, ...]] = ("test",)
    #: the metric ``rnnlab eval`` prints (``<split>/<headline>``)
    headline: ClassVar[str] = "loss"

    #: ``task.*`` keys added after runs were recorded, each with the value that does what
    #: those runs did: a recorded config without the key reads it (eval, generate, resume)
    backfill: ClassVar[dict[str, Any]] = {}

    #: why the task's model must read its sequences causally (a decoder stepped one token
    #: at a time, a next-token predictor), or None when a bidirectional stack is fine
    causal: ClassVar[str | None] = None

    #: whether ``train_loss`` is a sum over the batch (not a mean over its weight): under
    #: several ranks the gradient is then that of the global sum (rnnlab.train.distributed)
    summed_loss: ClassVar[bool] = False
    #: whether every training step has the same tensor shapes (bar an epoch's last), so a
    #: recorded CUDA graph can replay it (``trainer.cuda_graphs``: rnnlab.train.graphs)
    fixed_shape_steps: ClassVar[bool] = False

    #: whether ``trainer.precision=auto`` may train this task in bf16 (rnnlab.train.precision).
    #: Only a task whose results bf16 is known not to spoil declares True; the default is the
    #: safe answer, so a new task trains in fp32 until someone measures it.
    tolerates_bf16: ClassVar[bool] = False
    #: what bf16 training is expected to cost this task's accuracy: the warning an explicit
    #: ``trainer.precision=bf16`` prints for a task that does not tolerate it
    bf16_cost: ClassVar[str] = (
        "not measured for this task; bf16 keeps 8 significant bits (about 0.4% relative "
        "error per product), so its results may lose accuracy"
    )

    device: torch.device = torch.device("cpu")
    #: this process's rank and the number of ranks: each trains on its own shard
    rank: int = 0
    world_size: int = 1
    #: progress bars (``trainer.progress``): None = only when stderr is a terminal
    progress: bool | None = None

    def __init__(self, options: Options) -> None:
        self.options = options

    def to(self, device: torch.device) -> Task:
        """Move the task's tensors to ``device``; returns self."""
        self.device = device
        return self

    def prepare(self) -> None:
        """Read and check the data now, so that a missing or corrupt file, or a config value
        the data rules out, fails before any MLflow run exists (tasks with files override)."""
        return None  # a task that generates its data (bitcount) has nothing to read

    def bar(self, iterable: Iterable[Any], *, desc: str, unit: str, total: int | None = None):
        """``iterable`` with a progress bar when :attr:`progress` allows one."""
        from tqdm.auto import tqdm

        return tqdm(
            iterable,
            total=total,
            desc=desc,
            unit=unit,
            disable=not progress_enabled(self.progress),
            leave=False,
            dynamic_ncols=True,
        )

    def shard(self, *, rank: int, world_size: int) -> Task:
        """Train on shard ``rank`` of ``world_size`` from now on (data parallel); returns self.

        Every rank must get the same number of batches per epoch, and the union of the ranks'
        batches at a step must be the batch one process would train on with ``world_size``
        times the batch size (the equivalence tests/test_distributed.py checks)."""
        self.rank, self.world_size = rank, world_size
        return self

    def check_stack(self, stack: StackSpec) -> None:
        """Refuse a stack this task's model cannot run (before any run exists)."""
        if self.causal and stack.bidirectional:
            raise ConfigError(
                f"cell.bidirectional=true does not fit the {self.name} task: {self.causal}, so its "
                "recurrent stack must read left to right",
                "Drop cell.bidirectional=true (bidirectional stacks suit sequence-to-one tasks "
                "such as bitcount and adding)",
            )

    @abc.abstractmethod
    def build_model(self, *, stack: StackSpec) -> nn.Module:
        """The model for this task, with the given recurrent stack inside."""

    @abc.abstractmethod
    def train_batches(self, *, epoch: int) -> Iterator[Any]:
        """The batches of one training epoch (ordered by :func:`epoch_generator`)."""

    def step_positions(self) -> int:
        """Sequence positions (batch items x time steps) one training step processes, from
        the options: the batch shape of ``trainer.precision=auto``'s size rule. 0 (the
        default: unknown) keeps ``auto`` at fp32."""
        return 0

    def init_carry(self, model: nn.Module) -> Any:
        """State threaded from batch to batch within an epoch; None by default."""
        return None

    @abc.abstractmethod
    def train_loss(self, model: nn.Module, batch: Any, carry: Any) -> tuple[Tensor, Any, int]:
        """(loss to back-propagate, new carry, weight of this batch in the epoch mean)."""

    def train_metrics(self, mean_loss: float, *, weight: float, seconds: float) -> dict[str, float]:
        """Epoch-level training metrics from the weighted mean batch loss.

        ``weight`` is the epoch's summed batch weights (tokens, for a language model) and
        ``seconds`` its training wall time (evaluation excluded), for throughput metrics.
        """
        return {"train/loss": mean_loss}

    @abc.abstractmethod
    def evaluate(self, model: nn.Module, split: str) -> EvalResult:
        """Metrics (keyed ``<split>/<metric>``), outputs and tags of ``model`` on ``split``."""

    def data_sources(self) -> list[DataSource]:
        """Every split this task reads, with its digest; empty when it reads none."""
        return []

    def tags(self) -> dict[str, str]:
        """Run tags that the task's data decide (a default it chose), set as training
        starts; none by default."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Task state worth saving with a checkpoint (vocabularies, ...)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (before :meth:`build_model`)."""
        return None

    def write_artifacts(
        self, model: nn.Module, out_dir: Path, results: dict[str, EvalResult]
    ) -> list[Path]:
        """Task-specific text artifacts (samples, translations) written into ``out_dir``,
        from the model and the final evaluation ``results`` (split -> result)."""
        return []

    def tokenizer_files(self, out_dir: Path) -> list[Path]:
        """A trained tokenizer's model files written into ``out_dir`` (the run keeps them
        as ``tokenizer/`` artifacts); none by default."""
        return []

    def summary(self, model: nn.Module) -> list[str]:
        """Lines for the end-of-run console summary."""
        return []

    def result_warnings(self, results: dict[str, EvalResult]) -> list[str]:
        """Warnings about the final evaluation (split -> result), printed at the end of the
        run (e.g. a forecaster that loses to the naive forecast); none by default."""
        return []


@runtime_checkable
class Samples(Protocol):
    """A task whose model generates text (``rnnlab generate``)."""

    def sample_text(
        self, model: nn.Module, *, prime: str | None, steps: int, temperature: float, seed: int
    ) -> str:
        """``steps`` sampled tokens after ``prime`` (a sentence start when None), as text."""


@runtime_checkable
class Translates(Protocol):
    """A task whose model translates raw sentences (``rnnlab translate``)."""

    def translate(
        self, model: nn.Module, sentences: list[str], *, beam_size: int | None = None
    ) -> list[str]:
        """One detokenized translation per sentence."""

    def scores(
        self, hypotheses: list[str], references: list[str]
    ) -> tuple[dict[str, float], dict[str, str]]:
        """Corpus metrics (``bleu``, ``chrf``) of plain-text hypotheses against raw
        references, and tags holding their signatures."""


@runtime_checkable
class ShowsAttention(Protocol):
    """A task whose model attends over its input; the run draws heatmaps of it."""

    def attention_maps(self, model: nn.Module) -> list[AttentionMap]:
        """Attention of a few decoded validation sentences."""


@runtime_checkable
class DrawsFigures(Protocol):
    """A task with figures of its own (forecasts against actuals, a confusion matrix); the
    session draws them (plotting lives above the tasks)."""

    def figure_data(
        self, model: nn.Module, results: dict[str, EvalResult]
    ) -> dict[str, ForecastFigure | ConfusionFigure]:
        """File stem -> figure data, from the model and the final ``results``."""


@runtime_checkable
class ScoresText(Protocol):
    """A task whose model scores a text file it was not trained on (``rnnlab eval --text``)."""

    def text_source(self, path: Path, *, name: str) -> DataSource:
        """The file as the run records it (an MLflow dataset input, its sha256 the digest)."""

    def score_text(self, model: nn.Module, path: Path, *, name: str) -> EvalResult:
        """``eval/<name>/<metric>`` of ``model`` on the whole file, in batches."""


#: the types a served output column may have (MLflow's: ``string[]`` is an array of strings)
OUTPUT_TYPES = ("string", "double", "long", "string[]", "double[]")


@dataclass(frozen=True)
class ServingSchema:
    """What a task's served model reads and writes. :mod:`rnnlab.tracking.serving` makes it
    the MLflow model's signature and checks every request against it, so a task states it
    once and knows nothing of MLflow."""

    #: the one input column: one string per row (a sentence, a text, a bit string)
    column: str
    #: output column -> one of :data:`OUTPUT_TYPES`
    outputs: dict[str, str]
    #: the params a request may set -> their defaults (a default's type is the param's:
    #: int, float, str or bool); any other param is refused
    params: dict[str, Any]
    #: rows that work, for the model's input example (the UI and ``rnnlab serve`` show them)
    example: list[str]
    #: the longest row accepted, in characters; a longer one is refused, not truncated
    max_chars: int


@runtime_checkable
class Serves(Protocol):
    """A task whose model is served as strings in, a table out: the run's MLflow pyfunc model
    (``mlflow.pyfunc.load_model``, ``rnnlab serve``, Spark UDFs)."""

    def serving_schema(self) -> ServingSchema:
        """The served model's columns, params and example (called on the trained task)."""

    def serve(
        self, model: nn.Module, rows: list[str], params: dict[str, Any]
    ) -> dict[str, list[Any]]:
        """Output column -> one value per row. ``rows`` are non-empty strings within
        ``max_chars``, ``params`` every declared param; a value the task cannot take raises
        :class:`~rnnlab.errors.RnnlabError`, said as one sentence and its fix."""
