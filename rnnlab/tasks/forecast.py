"""Forecasting on a user's table: ``lookback`` rows in, the next ``horizon`` rows out.

The table (CSV or Parquet, :mod:`rnnlab.data.table`) is split per series in time, scaled
per series and channel on its training rows, and cut into windows at every step
(:mod:`rnnlab.data.windows`). The model is one of three heads around the recurrent stack
(:mod:`rnnlab.models.forecast`): ``direct``, ``seq2seq`` or ``segment`` (SegRNN).

Metrics follow the long-horizon literature: ``{split}/mse`` and ``{split}/mae`` on the
scaled values, over every window of the split (none dropped). The test split also gets the
errors in the table's own units (``test/mae_units``, ``test/rmse_units``, ``test/smape``,
``test/mase``) and the same errors of three baselines from the lookback alone
(``test/baseline/{naive,seasonal,mean}_{mse,mae}``: the last value, the value one season
before, the lookback's mean); a model that loses to the naive forecast is warned about.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from rnnlab.data.buckets import shard
from rnnlab.data.fetch import corpus_file, known_corpora, load_manifest
from rnnlab.data.table import FILLS, Columns, Table, load_table
from rnnlab.data.windows import (
    SCALERS,
    Boundaries,
    Scaler,
    boundaries,
    check_lengths,
    gather,
    series_of,
    window_starts,
    window_view,
)
from rnnlab.errors import ConfigError
from rnnlab.models.forecast import (
    HEADS,
    DirectForecaster,
    Forecaster,
    SegmentForecaster,
    Seq2SeqForecaster,
)
from rnnlab.models.stack import StackSpec
from rnnlab.options import FRACTION, NON_NEGATIVE, POSITIVE, PROBABILITY, Options, one_of, option
from rnnlab.tasks.base import (
    DataSource,
    EvalResult,
    ForecastFigure,
    Task,
    epoch_generator,
)
from rnnlab.tasks.forecast_metrics import (
    ErrorSums,
    baselines,
    mase_scale,
)

CONTEXTS = {"train": "train", "val": "validation", "test": "test"}
#: the test forecasts kept for the CSV artifact: every window up to this many values
MAX_KEPT_VALUES = 5_000_000


@dataclass(frozen=True)
class ForecastOptions(Options):
    """``task.*`` of ``conf/task/forecast.yaml``."""

    section: ClassVar[str] = "task"

    seed: int = option()
    #: a CSV or Parquet file, or a registered table (rnnlab data list)
    data: str | None = option()
    data_dir: str | None = option()
    time: str | None = option()
    #: a list of columns, or "all": every numeric column not named elsewhere
    target: Any = option()
    series: str | None = option()
    covariates: list[str] = option()
    known: list[str] = option()
    calendar: bool = option()
    fill: str = option(one_of(*FILLS))
    lookback: int = option(POSITIVE)
    horizon: int = option(POSITIVE)
    split: list[float] = option(POSITIVE)
    scaler: str = option(one_of(*SCALERS))
    revin: bool = option()
    model: str = option(one_of(*HEADS))
    teacher_forcing: float = option(PROBABILITY)
    segment: int = option(POSITIVE)
    channel_independent: bool = option()
    dropout: float = option(FRACTION)
    loss: str = option(one_of("mse", "mae"))
    batch_size: int = option(POSITIVE)
    eval_batch_size: int = option(POSITIVE)
    #: the seasonal-naive baseline's period in rows (null: no seasonal baseline)
    season: int | None = option(POSITIVE)
    #: test windows drawn in the forecast plot
    plots: int = option(NON_NEGATIVE)

    def check(self) -> None:
        if self.data is None:
            raise ValueError("task.data is not set; name a CSV or Parquet file (task.data=FILE)")
        if not (self.target == "all" or isinstance(self.target, list)):
            raise ValueError(f"task.target must be a list of columns or all, got {self.target!r}")
        if len(self.split) != 3:
            raise ValueError(f"task.split needs three values (train, val, test), got {self.split}")
        if all(v < 1 for v in self.split) and sum(self.split) > 1 + 1e-9:
            raise ValueError(f"task.split fractions add up to more than 1: {self.split}")
        if self.model == "segment" and (
            self.lookback % self.segment or self.horizon % self.segment
        ):
            raise ValueError(
                f"task.segment={self.segment} must divide task.lookback={self.lookback} and "
                f"task.horizon={self.horizon} (task.model=segment)"
            )

    def columns(self) -> Columns:
        return Columns(
            time=self.time,
            targets=None if self.target == "all" else tuple(self.target),
            series=self.series,
            covariates=tuple(self.covariates),
            known=tuple(self.known),
            calendar=self.calendar,
            fill=self.fill,
        )


def resolve_data(name: str, data_dir: str | None) -> Path:
    """A registered table's verified file (``NAME``: its first file, ``NAME/FILE``: that
    one; rnnlab data list), or the user's own path."""
    corpus, _, filename = name.partition("/")
    if corpus in known_corpora() and not Path(name).exists():
        manifest = load_manifest(corpus)
        return corpus_file(corpus, filename or manifest.files[0].name, data_dir=data_dir)
    return Path(name)


class Forecast(Task):
    """Multi-step forecasting of the target columns of a table."""

    name: ClassVar[str] = "forecast"
    Options = ForecastOptions
    objective: ClassVar[str] = "val/loss"
    headline: ClassVar[str] = "mse"

    def __init__(self, options: ForecastOptions) -> None:
        super().__init__(options)
        self.table: Table | None = None
        self.layout: dict[str, Any] | None = None  # channel names, restored with a checkpoint
        self.scaler: Scaler | None = None
        self.bounds: list[Boundaries] = []
        self.values: Tensor | None = None  # (rows, C) scaled, on the device
        self.starts: dict[str, Tensor] = {}
        self.mase: np.ndarray | None = None  # (series, T) in-sample naive MAE, in units

    # --- data -------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Read, check, split and scale the table (before any run exists)."""
        if self.table is not None:
            return
        o = self.options
        table = load_table(resolve_data(o.data, o.data_dir), o.columns())
        self.bounds = boundaries(table.starts, table.series_ids, tuple(o.split))
        check_lengths(self.bounds, lookback=o.lookback, horizon=o.horizon)
        if o.season is not None and o.season > o.lookback:
            raise ConfigError(
                f"task.season={o.season} is longer than task.lookback={o.lookback}: the "
                "seasonal-naive baseline reads the season before from the lookback",
                "Use a task.season of at most the lookback, or task.season=null",
            )
        n_targets = len(table.targets)
        self.mase = mase_scale(table.values[:, :n_targets], self.bounds, season=o.season or 1)
        scaled_channels = table.values.shape[1] - len(table.calendar)
        self.scaler = Scaler.fit(table.values, self.bounds, kind=o.scaler, channels=scaled_channels)
        self.scaler.apply(table.values, table.starts)
        self.table = table
        self.layout = self.layout_of(table)
        self.values = torch.from_numpy(table.values).to(self.device)
        self.starts = {
            split: window_starts(self.bounds, split, lookback=o.lookback, horizon=o.horizon)
            for split in ("train", "val", "test")
        }

    @staticmethod
    def layout_of(table: Table) -> dict[str, Any]:
        return {
            "targets": table.targets,
            "covariates": table.covariates,
            "known": table.known_all,
            "series": table.series_ids,
            "freq": table.freq,
        }

    def to(self, device: torch.device) -> Forecast:
        self.device = device
        if self.values is not None:
            self.values = self.values.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        self.prepare()
        return {"layout": self.layout, "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "layout" in state:
            self.layout = state["layout"]
            self.scaler = Scaler.from_state_dict(state["scaler"])

    def sizes(self) -> dict[str, int]:
        if self.layout is None:
            self.prepare()
        lay = self.layout
        n_in = len(lay["targets"]) + len(lay["covariates"]) + len(lay["known"])
        return {"targets": len(lay["targets"]), "inputs": n_in, "known": len(lay["known"])}

    def data_sources(self) -> list[DataSource]:
        """One dataset input per split: the table's sha256 and the rows the split holds."""
        self.prepare()
        table = self.table
        sources = []
        for split, context in CONTEXTS.items():
            rows = [
                f"{b.series}: {b.rows(split)[0] - b.start}-{b.rows(split)[1] - b.start - 1}"
                for b in self.bounds
            ]
            shown = "; ".join(rows[:5]) + (f"; ... ({len(rows)} series)" if len(rows) > 5 else "")
            details = {"rows": shown, "windows": str(len(self.starts[split]))}
            name = f"{table.path.stem}-{split}"
            sources.append(DataSource(name, context, table.digest, str(table.path), details))
        return sources

    # --- model and training -----------------------------------------------------------------

    def build_model(self, *, stack: StackSpec) -> Forecaster:
        o = self.options
        common = dict(lookback=o.lookback, horizon=o.horizon, revin=o.revin, **self.sizes())
        if o.model == "direct":
            return DirectForecaster(stack=stack, **common)
        if o.model == "seq2seq":
            return Seq2SeqForecaster(stack=stack, teacher_forcing=o.teacher_forcing, **common)
        return SegmentForecaster(
            stack=stack,
            segment=o.segment,
            channel_independent=o.channel_independent,
            dropout=o.dropout,
            **common,
        )

    def split_batch(self, windows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(b, L + H, C) windows -> past (b, L, C), known future (b, H, K), target (b, H, T)."""
        lookback, sizes = self.options.lookback, self.sizes()
        future = windows[:, lookback:]  # (b, H, C)
        first_known = sizes["inputs"] - sizes["known"]
        return windows[:, :lookback], future[..., first_known:], future[..., : sizes["targets"]]

    def train_batches(self, *, epoch: int) -> Iterator[Tensor]:
        """The window starts of each training batch, in an order drawn from (seed, epoch)."""
        self.prepare()
        starts = self.starts["train"]
        n, world = len(starts), self.world_size
        size = self.options.batch_size * world  # the global batch
        order = torch.randperm(n, generator=epoch_generator(self.options.seed, epoch))
        batches = range(0, n, size)
        for first in self.bar(batches, desc=f"epoch {epoch}", unit="batch", total=len(batches)):
            idx = shard(order[first : first + size].tolist(), rank=self.rank, world_size=world)
            if idx is not None:
                yield starts[idx]

    def loss_of(self, pred: Tensor, target: Tensor) -> Tensor:
        err = pred.float() - target
        return (err * err).mean() if self.options.loss == "mse" else err.abs().mean()

    def train_loss(self, model: nn.Module, batch: Tensor, carry: Any) -> tuple[Tensor, Any, int]:
        past, known, target = self.split_batch(gather(self.window_view(), batch.to(self.device)))
        pred = model(past, known, target)  # (b, H, T)
        return self.loss_of(pred, target), carry, int(batch.shape[0])

    def window_view(self) -> Tensor:
        o = self.options
        return window_view(self.values, lookback=o.lookback, horizon=o.horizon)

    def train_metrics(self, mean_loss: float, *, weight: float, seconds: float) -> dict[str, float]:
        return {"train/loss": mean_loss, "windows_per_s": weight / seconds if seconds > 0 else 0.0}

    # --- evaluation -------------------------------------------------------------------------

    @torch.no_grad()
    def predict_split(
        self, model: nn.Module, split: str
    ) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
        """(starts, past, forecast, actual) of every window of ``split``, batch by batch."""
        self.prepare()
        model.eval()
        view, starts = self.window_view(), self.starts[split]
        size = self.options.eval_batch_size
        for first in self.bar(range(0, len(starts), size), desc=f"eval {split}", unit="batch"):
            batch = starts[first : first + size].to(self.device)
            past, known, target = self.split_batch(gather(view, batch))
            yield batch, past, model(past, known).float(), target

    def evaluate(self, model: nn.Module, split: str) -> EvalResult:
        """Scaled MSE/MAE over every window of ``split``; on test also the errors in units,
        the baselines, and the forecasts themselves (for the artifacts)."""
        final = split == "test"
        sums = ErrorSums(season=self.options.season) if final else ErrorSums(season=None)
        kept: dict[str, list[Any]] = {"starts": [], "forecast": [], "actual": []}
        budget = MAX_KEPT_VALUES
        n_targets = self.sizes()["targets"]
        series_starts = torch.as_tensor(self.table.starts, device=self.device)
        for starts, past, pred, target in self.predict_split(model, split):
            sums.add_scaled(pred, target)
            if not final:
                continue
            series = series_of(starts, series_starts)
            units = slice(0, n_targets)
            pred_u = self.scaler.invert(pred, series, units)
            target_u = self.scaler.invert(target, series, units)
            mase = torch.as_tensor(self.mase, device=self.device)[series]  # (b, T)
            sums.add_units(pred_u, target_u, mase)
            sums.add_baselines(
                baselines(past[..., :n_targets], self.options.horizon, self.options.season), target
            )
            if budget > 0:
                kept["starts"].append(starts.cpu())
                kept["forecast"].append(pred_u.cpu())
                kept["actual"].append(target_u.cpu())
                budget -= pred_u.numel()
        result = EvalResult(sums.metrics(split, loss=self.options.loss))
        if final:
            result.arrays = {k: torch.cat(v).numpy() for k, v in kept.items() if v}
            naive = result.metrics.get("test/baseline/naive_mse")
            result.tags["forecast.beats_naive"] = str(result.metrics["test/mse"] < naive).lower()
        return result

    def result_warnings(self, results: dict[str, EvalResult]) -> list[str]:
        test = results.get("test")
        if test is None or test.tags.get("forecast.beats_naive") != "false":
            return []
        m = test.metrics
        return [
            f"the model loses to the naive forecast (the last value repeated): test/mse "
            f"{m['test/mse']:.4g} against {m['test/baseline/naive_mse']:.4g}; train longer, "
            "try another task.model or task.lookback, or task.revin=true"
        ]

    # --- artifacts --------------------------------------------------------------------------

    def test_frame(self, arrays: dict[str, np.ndarray]):
        """Every kept test forecast as a long table: one row per window and step."""
        from rnnlab.tasks.forecast_output import forecast_frame

        return forecast_frame(self.table, self.layout, arrays, lookback=self.options.lookback)

    def write_artifacts(
        self, model: nn.Module, out_dir: Path, results: dict[str, EvalResult]
    ) -> list[Path]:
        test = results.get("test")
        if test is None or not test.arrays:
            return []
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "test_forecasts.csv.gz"
        self.test_frame(test.arrays).to_csv(path, index=False, float_format="%.6g")
        return [path]

    def figure_data(
        self, model: nn.Module, results: dict[str, EvalResult]
    ) -> dict[str, ForecastFigure]:
        from rnnlab.tasks.forecast_output import forecast_figure

        test = results.get("test")
        if test is None or not test.arrays or self.options.plots == 0:
            return {}
        figure = forecast_figure(
            self.table,
            self.layout,
            self.scaler,
            test.arrays,
            lookback=self.options.lookback,
            count=self.options.plots,
        )
        return {"forecasts_test": figure}

    def summary(self, model: nn.Module) -> list[str]:
        if self.table is None:
            return []
        counts = ", ".join(f"{k} {len(v)}" for k, v in self.starts.items())
        return [
            f"table: {self.table.path.name}, {len(self.table.values)} rows, "
            f"{self.table.n_series} series, {len(self.table.targets)} target(s); windows: {counts}"
        ]
