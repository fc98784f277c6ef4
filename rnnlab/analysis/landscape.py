"""The loss landscape of the two-weight Elman recurrence on a bit-count run's training data.

For ``task=bitcount cell=elman`` the model is s_t = x_t·w_x + s_{t-1}·w_rec with the last
state as the prediction, so its training loss (sum of squared errors over the training set)
is a function of two numbers. We rebuild the run's own training set from its params, evaluate
that function on a grid as a log-scaled colour map, and draw each run's path through
(w_x, w_rec) from its logged ``elman/w_x`` and ``elman/w_rec`` history: plain SGD creeps
along the steep valley, RMSProp crosses it.

The surface is computed in the precision the runs trained in (their ``precision`` tag), so
it is the very loss they logged: under ``trainer.precision=bf16`` every product and sum of
the recurrence is rounded to bfloat16, as autocast's matrix products round them. A panel
whose runs trained in different precisions gets the fp32 surface. The plot says which
precision the surface is in, and marks every run trained in bf16.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnlab.analysis.history import RunInfo
from rnnlab.errors import RnnlabError

BITCOUNT_TARGET = "rnnlab.tasks.bitcount.BitCount"
SOLUTION = (1.0, 1.0)
#: the plotted window never extends past this (a diverged path simply leaves the picture)
MAX_ABS_WEIGHT = 4.0
GRID = 241


@dataclass
class Trajectory:
    run: RunInfo
    w_x: np.ndarray  # (E + 1,) including the initial weights when known
    w_rec: np.ndarray  # (E + 1,)


def parse_param(value: str):
    """MLflow params are strings: '20' -> 20, 'None' -> None, '1.2' -> 1.2."""
    import yaml

    return None if value in ("None", "null", "") else yaml.safe_load(value)


def check_supported(run: RunInfo) -> None:
    """Only bitcount runs with the single-unit elman cell have a two-weight landscape."""
    p = run.params
    problems = []
    if p.get("task._target_") != BITCOUNT_TARGET:
        problems.append(f"its task is {p.get('task.name', '?')}, not bitcount")
    if p.get("cell.name") != "elman":
        problems.append(f"its cell is {p.get('cell.name', '?')}, not elman")
    elif parse_param(p.get("cell.hidden_size", "1")) != 1 or parse_param(
        p.get("cell.num_layers", "1")
    ) not in (1, None):
        problems.append("its elman cell is not a single unit in a single layer")
    if problems:
        raise RnnlabError(
            f"rnnlab landscape draws only bitcount runs with the elman cell, whose loss depends on "
            f"two weights; run {run.run_id} ({run.name}) does not qualify: {'; '.join(problems)}",
            "Train one with: rnnlab train task=bitcount cell=elman optim=rmsprop, and use "
            "'rnnlab plot RUN_ID' for learning curves of any run",
        )


def task_kwargs(run: RunInfo) -> dict:
    """The bitcount task's options, from the run's ``task.*`` params."""
    return {
        key[len("task.") :]: parse_param(value)
        for key, value in run.params.items()
        if key.startswith("task.") and key not in ("task._target_", "task.name")
    }


def training_set(run: RunInfo) -> tuple[np.ndarray, np.ndarray]:
    """The run's own training inputs (T, n) and counts (n,), regenerated from its seed."""
    from rnnlab.data.bits import training_bits

    options = task_kwargs(run)
    try:
        x, y = training_bits(  # (T, n, 1), (n,)
            seed=int(options["seed"]),
            n_train=int(options["n_train"]),
            seq_len=int(options["seq_len"]),
        )
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise RnnlabError(
            f"Cannot rebuild the training set of run {run.run_id} from its task.* params: {exc}",
            "The run was logged by another rnnlab version; retrain it with this one",
        ) from exc
    return x.squeeze(-1).double().numpy(), y.double().numpy()  # (T, n), (n,)


def trained_precision(run: RunInfo) -> str:
    """``fp32`` or ``bf16``: the run's ``precision`` tag (what ``auto`` resolved to); a run
    logged before that tag existed trained in what its ``trainer.precision`` says, else fp32."""
    for value in (run.tags.get("precision"), run.params.get("trainer.precision")):
        if value in ("fp32", "bf16"):
            return value
    return "fp32"


def sse_surface(
    x: np.ndarray, y: np.ndarray, w_x: np.ndarray, w_rec: np.ndarray, precision: str = "fp32"
) -> np.ndarray:
    """Sum of squared errors of s_T for every (w_x, w_rec) pair; w_x, w_rec of any one shape.
    ``fp32``: in float64, the exact loss fp32 training computes to 7 digits; ``bf16``: as
    training under bf16 autocast computes it (:func:`sse_surface_bf16`)."""
    if precision == "bf16":
        return sse_surface_bf16(x, y, w_x, w_rec)
    s = np.zeros((*w_x.shape, y.shape[0]))  # (..., n)
    for x_t in x:  # x_t: (n,)
        s = x_t * w_x[..., None] + s * w_rec[..., None]  # (..., n)
    return ((s - y) ** 2).sum(axis=-1)  # (...)


def sse_surface_bf16(
    x: np.ndarray, y: np.ndarray, w_x: np.ndarray, w_rec: np.ndarray
) -> np.ndarray:
    """The loss as the elman cell computes it under bf16 autocast: its matrix products
    x_t @ w_x.T and s @ w_rec.T take bf16 operands and return each product rounded to bf16,
    their sum is a bf16 addition, and the error against the fp32 counts is squared and
    summed in fp32. bf16 tensor arithmetic rounds every operation the same way."""
    import torch

    bf16 = torch.bfloat16
    wx = torch.from_numpy(np.asarray(w_x, dtype=np.float32)).to(bf16)[..., None]  # (..., 1)
    wr = torch.from_numpy(np.asarray(w_rec, dtype=np.float32)).to(bf16)[..., None]  # (..., 1)
    s = torch.zeros((*wx.shape[:-1], y.shape[0]), dtype=bf16)  # (..., n)
    for x_t in torch.from_numpy(np.asarray(x, dtype=np.float32)).to(bf16):  # x_t: (n,)
        s = x_t * wx + s * wr  # (..., n), every product and the sum rounded to bf16
    error = s.float() - torch.from_numpy(np.asarray(y, dtype=np.float32))  # (..., n) fp32
    return (error**2).sum(dim=-1).double().numpy()  # (...)


def trajectory(run: RunInfo) -> Trajectory:
    """The path of (w_x, w_rec) over epochs, starting from the configured initial weights."""
    w_x = [v for _, v in run.history("elman/w_x")]
    w_rec = [v for _, v in run.history("elman/w_rec")]
    n = min(len(w_x), len(w_rec))
    start_x = parse_param(run.params.get("cell.layer.init_w_x", "null"))
    start_rec = parse_param(run.params.get("cell.layer.init_w_rec", "null"))
    if start_x is not None and start_rec is not None:
        w_x, w_rec = [float(start_x), *w_x[:n]], [float(start_rec), *w_rec[:n]]
    return Trajectory(run, np.asarray(w_x[: n + 1]), np.asarray(w_rec[: n + 1]))


def window(paths: Sequence[Trajectory]) -> tuple[tuple[float, float], tuple[float, float]]:
    """Axis limits that hold every finite path point and the solution, padded, clipped."""
    limits = []
    for axis in ("w_x", "w_rec"):
        values = np.concatenate([getattr(p, axis) for p in paths] + [np.asarray(SOLUTION)])
        values = np.clip(values[np.isfinite(values)], -MAX_ABS_WEIGHT, MAX_ABS_WEIGHT)
        lo, hi = float(values.min()), float(values.max())
        pad = 0.25 * max(hi - lo, 1.0)
        limits.append((max(lo - pad, -MAX_ABS_WEIGHT), min(hi + pad, MAX_ABS_WEIGHT)))
    return limits[0], limits[1]


def surface_precision(runs: Sequence[RunInfo]) -> str:
    """The precision a panel's surface is computed in: the one its runs all trained in,
    else fp32 (and the bf16 runs are marked)."""
    precisions = {trained_precision(run) for run in runs}
    return precisions.pop() if len(precisions) == 1 else "fp32"


def path_label(run: RunInfo) -> str:
    """A run's legend entry; a run trained in bf16 says so."""
    return run.label + (" [trained in bf16]" if trained_precision(run) == "bf16" else "")


def draw_panel(fig, ax, members: Sequence[RunInfo], settings: dict) -> None:
    """The surface of one training set, in its runs' precision, with every run's path."""
    from matplotlib.colors import LogNorm

    x, y = training_set(members[0])
    paths = [trajectory(run) for run in members]
    precision = surface_precision(members)
    (x_lo, x_hi), (r_lo, r_hi) = window(paths)
    gx, gr = np.meshgrid(np.linspace(x_lo, x_hi, GRID), np.linspace(r_lo, r_hi, GRID))
    loss = sse_surface(x, y, gx, gr, precision)  # (GRID, GRID)
    floor = max(float(loss.min()), 1e-6)
    mesh = ax.pcolormesh(
        gx, gr, np.maximum(loss, floor), norm=LogNorm(vmin=floor, vmax=loss.max()),
        cmap="viridis", shading="auto",
    )  # fmt: skip
    fig.colorbar(mesh, ax=ax, label=f"training loss (SSE, log scale), computed in {precision}")
    for path_ in paths:
        (line,) = ax.plot(path_.w_x, path_.w_rec, "-", linewidth=1.8, label=path_label(path_.run))
        ax.plot(path_.w_x[0], path_.w_rec[0], "o", color=line.get_color(), markersize=6)
        ax.plot(path_.w_x[-1], path_.w_rec[-1], "X", color=line.get_color(), markersize=9)
    ax.plot(*SOLUTION, "*", color="white", markeredgecolor="black", markersize=14,
            label="w_x = w_rec = 1")  # fmt: skip
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(r_lo, r_hi)
    ax.set_xlabel("w_x (input weight)")
    ax.set_ylabel("w_rec (recurrent weight)")
    ax.set_title(
        f"bitcount seed {settings.get('seed')}: {x.shape[1]} sequences of length "
        f"{x.shape[0]}\nloss surface in {precision}"
    )
    ax.legend(loc="lower left", fontsize=8, framealpha=0.85)


def landscape_figure(runs: Sequence[RunInfo]):
    """The figure: one panel per distinct training set, its runs overlaid as paths."""
    from rnnlab.analysis.plots import use_headless_backend

    for run in runs:
        check_supported(run)
    groups: dict[tuple, list[RunInfo]] = {}
    for run in runs:
        groups.setdefault(tuple(sorted(task_kwargs(run).items())), []).append(run)
    use_headless_backend()
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(groups), figsize=(6.4 * len(groups), 5.4), dpi=100, squeeze=False
    )
    for ax, (key, members) in zip(axes[0], groups.items(), strict=True):
        draw_panel(fig, ax, members, dict(key))
    fig.suptitle("Loss landscape of s_t = x_t·w_x + s_{t-1}·w_rec (o start, X end)")
    fig.tight_layout()
    return fig


def plot_landscape(runs: Sequence[RunInfo], path: Path) -> Path:
    """Draw :func:`landscape_figure` into the PNG file ``path``."""
    fig = landscape_figure(runs)
    import matplotlib.pyplot as plt  # after landscape_figure chose the headless backend

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def log_to_runs(runs: Sequence[RunInfo], path: Path) -> None:
    """Attach the figure to every run drawn in it, as ``plots/landscape.png``."""
    import shutil

    with tempfile.TemporaryDirectory(prefix="rnnlab-landscape-") as tmp:
        copy = Path(tmp) / "landscape.png"
        shutil.copyfile(path, copy)
        for run in runs:
            run.client.log_artifact(run.run_id, str(copy), "plots")
