"""Matplotlib figures: learning curves from a run's history, attention heatmaps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def use_headless_backend() -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)


def new_figure(*, figsize: tuple[float, float]) -> Any:
    """A matplotlib Figure drawn by the Agg canvas: no pyplot, no GUI backend, nothing global
    to close (pyplot's import and backend set-up cost a short run a noticeable share of its
    wall time)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def wants_log_scale(values: Sequence[float]) -> bool:
    """A log y-axis helps when positive values span more than two decades."""
    positive = [v for v in values if v > 0]
    return len(positive) == len(values) and len(values) > 1 and max(positive) / min(positive) > 100


def plot_curves(
    curves: Mapping[str, Sequence[tuple[int, float]]],
    path: Path,
    *,
    title: str = "",
    xlabel: str = "epoch",
    ylabel: str = "loss",
) -> Path:
    """One line per named curve of (step, value) points, saved as PNG."""
    fig = new_figure(figsize=(7, 4.5))
    ax = fig.subplots()
    all_values: list[float] = []
    for label, points in curves.items():
        if not points:
            continue
        steps, values = zip(*points, strict=True)
        ax.plot(steps, values, label=label, linewidth=1.5)
        all_values.extend(values)
    if wants_log_scale(all_values):
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right")  # "best" tests every point of every curve against the box
    # fixed margins that fit the labels of a loss axis: tight_layout would lay the figure out
    # twice, half the time of the drawing
    fig.subplots_adjust(left=0.11, right=0.97, bottom=0.11, top=0.92)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def attention_heatmap(attention: Any, path: Path) -> Path:
    """One :class:`~rnnlab.tasks.base.AttentionMap` as a PNG: target steps x source tokens."""
    weights = attention.weights  # (T, S)
    fig = new_figure(
        figsize=(1.0 + 0.45 * len(attention.source), 1.0 + 0.4 * len(attention.target))
    )
    ax = fig.subplots()
    ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(attention.source)), attention.source, rotation=60, ha="right")
    ax.set_yticks(range(weights.shape[0]), attention.target[: weights.shape[0]])
    ax.set_title(attention.title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def forecast_plot(figure: Any, path: Path) -> Path:
    """A :class:`~rnnlab.tasks.base.ForecastFigure`: one panel per window, the lookback and
    the actual values in black, the forecast in colour."""
    count = len(figure.windows)
    fig = new_figure(figsize=(8, 2.2 * max(count, 1)))
    axes = fig.subplots(max(count, 1), 1, squeeze=False)[:, 0]
    for ax, (past_x, past_y, future_x, actual, forecast) in zip(axes, figure.windows, strict=False):
        ax.plot(past_x, past_y, color="0.35", linewidth=1.0, label="lookback")
        ax.plot(future_x, actual, color="black", linewidth=1.2, label="actual")
        ax.plot(future_x, forecast, color="tab:red", linewidth=1.4, label="forecast")
        ax.set_ylabel(figure.channel)
        ax.grid(True, alpha=0.3)
    axes[0].set_title(figure.title)
    axes[0].legend(loc="upper left", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def confusion_plot(figure: Any, path: Path) -> Path:
    """A :class:`~rnnlab.tasks.base.ConfusionFigure` as a heatmap with the counts written in."""
    counts = figure.counts
    k = len(figure.labels)
    fig = new_figure(figsize=(2.0 + 0.5 * k, 1.6 + 0.5 * k))
    ax = fig.subplots()
    ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(k), figure.labels, rotation=45, ha="right")
    ax.set_yticks(range(k), figure.labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(figure.title, fontsize=9)
    top = counts.max() if counts.size else 0
    for i in range(k):
        for j in range(k):
            colour = "white" if counts[i, j] > top / 2 else "black"
            ax.text(
                j, i, str(int(counts[i, j])), ha="center", va="center", color=colour, fontsize=8
            )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def draw_figure(figure: Any, path: Path) -> Path:
    """Draw a task's figure data (:class:`~rnnlab.tasks.base.DrawsFigures`) by its kind."""
    from rnnlab.tasks.base import ConfusionFigure, ForecastFigure

    if isinstance(figure, ForecastFigure):
        return forecast_plot(figure, path)
    if isinstance(figure, ConfusionFigure):
        return confusion_plot(figure, path)
    raise TypeError(f"no drawing for figure data of type {type(figure).__name__}")
