"""Sequence classification: one label per numeric sequence (sequence to one).

The data come from one file split in three, stratified by class (``task.split``), or from the
archives' own split (``task.train`` and ``task.test``), validation then drawn from the
training file (``task.valid_fraction``, stratified) and the test file scored only at the
end. Three layouts are read (:mod:`rnnlab.data.sequences`). Sequences of different lengths
are padded into one array and packed by the recurrent stack, so padding never reaches the
state; batches group similar lengths (:func:`rnnlab.data.buckets.bucketed_batches`).

Metrics per split: ``loss`` (cross-entropy), ``accuracy``, ``macro_f1``; the test split also
the majority-class baseline (``test/baseline/majority_accuracy``, ``..._macro_f1``: always
the most frequent training class) and a confusion matrix (``plots/confusion_test.png``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.data.buckets import bucketed_batches, shard
from rnnlab.data.fetch import sha256_of
from rnnlab.data.sequences import FORMATS, Sequences, label_order, read_sequences
from rnnlab.errors import ConfigError, DataError
from rnnlab.models.seq2one import SequenceClassifier
from rnnlab.models.stack import StackSpec
from rnnlab.options import FRACTION, POSITIVE, Options, one_of, option
from rnnlab.tasks.base import ConfusionFigure, DataSource, EvalResult, Task, epoch_generator
from rnnlab.tasks.forecast import resolve_data

CONTEXTS = {"train": "train", "val": "validation", "test": "test"}


@dataclass(frozen=True)
class ClassifyOptions(Options):
    """``task.*`` of ``conf/task/classify.yaml``."""

    section: ClassVar[str] = "task"

    seed: int = option()
    #: one file, split by task.split ...
    data: str | None = option()
    #: ... or the archive's own split: two files (validation from train)
    train: str | None = option()
    test: str | None = option()
    data_dir: str | None = option()
    format: str = option(one_of(*FORMATS))
    #: the label column's name, or its position in a headerless file
    label: Any = option()
    series: str | None = option()
    time: str | None = option()
    features: Any = option()
    split: list[float] = option(FRACTION)
    valid_fraction: float = option(FRACTION)
    scaler: str = option(one_of("standard", "none"))
    dropout: float = option(FRACTION)
    batch_size: int = option(POSITIVE)
    eval_batch_size: int = option(POSITIVE)

    def check(self) -> None:
        archive = self.train is not None or self.test is not None
        if archive and (self.train is None or self.test is None):
            raise ValueError("task.train and task.test go together (the archive's own split)")
        if archive == (self.data is not None):
            raise ValueError(
                "set either task.data=FILE (split by task.split) or task.train=FILE "
                "task.test=FILE (the archive's split), not both and not neither"
            )
        if len(self.split) != 3 or abs(sum(self.split) - 1) > 1e-6:
            raise ValueError(f"task.split needs three fractions adding up to 1, got {self.split}")


def stratified(labels: np.ndarray, fractions: list[float], seed: int) -> list[np.ndarray]:
    """Indices per part, each class cut by ``fractions`` (the first part keeps at least one
    example of every class), in a seeded order."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in fractions]
    for k in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == k))
        bounds = np.floor(np.cumsum(fractions)[:-1] * len(members)).astype(int)
        bounds[0] = max(bounds[0], 1)
        for part, chunk in zip(parts, np.split(members, bounds), strict=True):
            part.extend(chunk.tolist())
    return [np.sort(np.array(p, dtype=np.int64)) for p in parts]


def macro_f1(counts: np.ndarray) -> float:
    """Macro-averaged F1 of a (K, K) confusion matrix (actual x predicted); classes that
    never occur nor are predicted are left out."""
    tp = np.diag(counts).astype(float)
    actual, predicted = counts.sum(1), counts.sum(0)
    present = (actual + predicted) > 0
    f1 = np.where(present, 2 * tp / np.maximum(actual + predicted, 1), 0.0)
    return float(f1[present].mean()) if present.any() else 0.0


@dataclass
class Split:
    """One split, padded: (N, T_max, D) values, (N,) lengths and class indices."""

    values: Tensor
    lengths: Tensor
    classes: Tensor
    source: Path

    def batch(self, idx: Tensor, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        lengths = self.lengths[idx]
        x = self.values[idx, : int(lengths.max())]  # (b, T_b, D): trimmed to the batch
        return x.transpose(0, 1).to(device), lengths, self.classes[idx].to(device)  # (T_b, b, D)


class Classify(Task):
    """Classify whole sequences."""

    name: ClassVar[str] = "classify"
    Options = ClassifyOptions
    objective: ClassVar[str] = "val/loss"
    headline: ClassVar[str] = "accuracy"

    def __init__(self, options: ClassifyOptions) -> None:
        super().__init__(options)
        self.splits: dict[str, Split] = {}
        self.labels: list[str] | None = None  # class index -> label
        self.stats: tuple[np.ndarray, np.ndarray] | None = None  # per-feature mean, std
        self.features = 0

    # --- data -------------------------------------------------------------------------------

    def read(self, path: str | Path, *, required: bool = True) -> Sequences:
        o = self.options
        return read_sequences(
            resolve_data(str(path), o.data_dir),
            fmt=o.format,
            label=o.label,
            series=o.series,
            time=o.time,
            features=o.features,
            required=required,
        )

    def prepare(self) -> None:
        if self.splits:
            return
        o = self.options
        if o.data is not None:
            found = self.read(o.data)
            parts = self.labelled(found)
            idx = stratified(parts, list(o.split), o.seed)
            chosen = dict(zip(("train", "val", "test"), ((found, i) for i in idx), strict=True))
        else:
            train, test = self.read(o.train), self.read(o.test)
            classes = self.labelled(train)
            fractions = [1 - o.valid_fraction, o.valid_fraction]
            fit, val = stratified(classes, fractions, o.seed)
            chosen = {
                "train": (train, fit),
                "val": (train, val),
                "test": (test, np.arange(len(test))),
            }
            self.labelled(test)
        for split, (seqs, idx) in chosen.items():
            if len(idx) == 0:
                raise ConfigError(
                    f"The {split} split of {seqs.path.name} is empty",
                    "Give more sequences, or larger task.split / task.valid_fraction shares",
                )
        train_seqs, train_idx = chosen["train"]
        self.fit_scaler([train_seqs.values[i] for i in train_idx])
        self.splits = {s: self.pad(seqs, idx) for s, (seqs, idx) in chosen.items()}

    def labelled(self, found: Sequences) -> np.ndarray:
        """Class indices of ``found``'s labels (the label order fixed by the first file)."""
        if found.labels is None:
            raise DataError(
                f"{found.path.name} holds no labels", "Name the label column (task.label)"
            )
        if self.labels is None:
            self.labels = label_order(found.labels)
            self.features = found.values[0].shape[1]
        index = {label: k for k, label in enumerate(self.labels)}
        unknown = [label for label in found.labels if label not in index]
        if unknown:
            raise DataError(
                f"{found.path.name} has label '{unknown[0]}', which the training data never show",
                "Train on data holding every class",
            )
        return np.array([index[label] for label in found.labels])

    def fit_scaler(self, train: list[np.ndarray]) -> None:
        if self.options.scaler == "none":
            self.stats = (np.zeros(self.features, np.float32), np.ones(self.features, np.float32))
            return
        rows = np.concatenate(train).astype(np.float64)  # (sum T, D): training rows only
        std = rows.std(0)
        self.stats = (
            rows.mean(0).astype(np.float32),
            np.where(std > 0, std, 1.0).astype(np.float32),
        )

    def pad(self, found: Sequences, idx: np.ndarray) -> Split:
        mean, std = self.stats
        seqs = [(found.values[i] - mean) / std for i in idx]
        if any(s.shape[1] != self.features for s in seqs):
            raise DataError(
                f"{found.path.name} has sequences of another number of features than {self.features}",
                "Give every sequence the same features",
            )
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
        values = torch.zeros(len(seqs), int(lengths.max()), self.features)  # (N, T_max, D)
        for row, seq in enumerate(seqs):
            values[row, : len(seq)] = torch.from_numpy(seq)
        classes = torch.tensor(
            self.labelled(found)[idx] if found.labels is not None else np.zeros(len(idx)),
            dtype=torch.long,
        )
        return Split(values, lengths, classes, found.path)

    def data_sources(self) -> list[DataSource]:
        self.prepare()
        out = []
        for split, context in CONTEXTS.items():
            part = self.splits[split]
            details = {"sequences": str(len(part.lengths)), "classes": ", ".join(self.labels or [])}
            digest = sha256_of(part.source)
            out.append(
                DataSource(
                    f"{part.source.stem}-{split}", context, digest, str(part.source), details
                )
            )
        return out

    def state_dict(self) -> dict[str, Any]:
        self.prepare()
        # tensors, not arrays: checkpoints load with torch.load(weights_only=True)
        stats = tuple(torch.from_numpy(s) for s in self.stats)
        return {"labels": self.labels, "stats": stats, "features": self.features}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "labels" in state:
            self.labels, self.features = state["labels"], state["features"]
            self.stats = tuple(s.numpy() for s in state["stats"])

    # --- model and training -----------------------------------------------------------------

    def build_model(self, *, stack: StackSpec) -> SequenceClassifier:
        if self.labels is None:
            self.prepare()
        return SequenceClassifier(
            stack=stack,
            input_size=self.features,
            classes=len(self.labels),
            dropout=self.options.dropout,
        )

    def train_batches(self, *, epoch: int) -> Iterator[Tensor]:
        self.prepare()
        lengths = self.splits["train"].lengths.tolist()
        size = self.options.batch_size * self.world_size
        generator = epoch_generator(self.options.seed, epoch)
        for idx in bucketed_batches(lengths, batch_size=size, generator=generator):
            mine = shard(idx, rank=self.rank, world_size=self.world_size)
            if mine is not None:
                yield torch.tensor(mine)

    def train_loss(self, model: nn.Module, batch: Tensor, carry: Any) -> tuple[Tensor, Any, int]:
        x, lengths, y = self.splits["train"].batch(batch, self.device)
        return F.cross_entropy(model(x, lengths).float(), y), carry, int(len(batch))

    # --- evaluation -------------------------------------------------------------------------

    @torch.no_grad()
    def predict(self, model: nn.Module, part: Split) -> tuple[Tensor, Tensor]:
        """(N, K) logits and (N,) predicted class of every sequence of ``part``."""
        model.eval()
        order = torch.argsort(part.lengths)  # similar lengths together: less padding
        logits = torch.zeros(len(order), len(self.labels))
        for first in range(0, len(order), self.options.eval_batch_size):
            idx = order[first : first + self.options.eval_batch_size]
            x, lengths, _ = part.batch(idx, self.device)
            logits[idx] = model(x, lengths).float().cpu()
        return logits, logits.argmax(1)

    def evaluate(self, model: nn.Module, split: str) -> EvalResult:
        self.prepare()
        part = self.splits[split]
        logits, pred = self.predict(model, part)
        k = len(self.labels)
        counts = np.zeros((k, k), np.int64)
        np.add.at(counts, (part.classes.numpy(), pred.numpy()), 1)
        metrics = {
            f"{split}/loss": F.cross_entropy(logits, part.classes).item(),
            f"{split}/accuracy": float(np.trace(counts) / counts.sum()),
            f"{split}/macro_f1": macro_f1(counts),
        }
        result = EvalResult(metrics, arrays={"confusion": counts, "predicted": pred.numpy()})
        if split == "test":
            majority = int(torch.bincount(self.splits["train"].classes, minlength=k).argmax())
            base = np.zeros((k, k), np.int64)
            base[:, majority] = counts.sum(1)
            metrics["test/baseline/majority_accuracy"] = float(np.trace(base) / base.sum())
            metrics["test/baseline/majority_macro_f1"] = macro_f1(base)
        return result

    def result_warnings(self, results: dict[str, EvalResult]) -> list[str]:
        m = results["test"].metrics if "test" in results else {}
        if m and m["test/accuracy"] <= m["test/baseline/majority_accuracy"]:
            return [
                f"the model is no better than always answering the most frequent class: test "
                f"accuracy {m['test/accuracy']:.4g} against {m['test/baseline/majority_accuracy']:.4g}"
            ]
        return []

    def figure_data(
        self, model: nn.Module, results: dict[str, EvalResult]
    ) -> dict[str, ConfusionFigure]:
        test = results.get("test")
        if test is None:
            return {}
        title = f"test: accuracy {test.metrics['test/accuracy']:.3f}"
        return {
            "confusion_test": ConfusionFigure(title, list(self.labels), test.arrays["confusion"])
        }

    def write_artifacts(
        self, model: nn.Module, out_dir: Path, results: dict[str, EvalResult]
    ) -> list[Path]:
        test = results.get("test")
        if test is None:
            return []
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "test_predictions.csv"
        part = self.splits["test"]
        rows = ["actual,predicted"]
        rows += [
            f"{self.labels[a]},{self.labels[p]}"
            for a, p in zip(part.classes.tolist(), test.arrays["predicted"].tolist(), strict=True)
        ]
        path.write_text("\n".join(rows) + "\n")
        return [path]

    def predict_file(self, model: nn.Module, path: Path) -> list[tuple[str, str]]:
        """(sequence id, predicted label) for every sequence of a new file (labels unused)."""
        found = self.read(path, required=False)
        mean, std = self.stats
        seqs = [(s - mean) / std for s in found.values]
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
        values = torch.zeros(len(seqs), int(lengths.max()), self.features)
        for row, seq in enumerate(seqs):
            values[row, : len(seq)] = torch.from_numpy(seq)
        _, pred = self.predict(
            model, Split(values, lengths, torch.zeros(len(seqs), dtype=torch.long), found.path)
        )
        return [(i, self.labels[p]) for i, p in zip(found.ids, pred.tolist(), strict=True)]

    def summary(self, model: nn.Module) -> list[str]:
        if not self.splits:
            return []
        sizes = ", ".join(f"{k} {len(v.lengths)}" for k, v in self.splits.items())
        return [f"{len(self.labels)} classes; sequences: {sizes}"]
