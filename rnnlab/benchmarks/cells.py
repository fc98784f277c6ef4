"""Forward+backward speed of every cell on every path, as a ratio to fused ``nn.LSTM``.

LM sizes: 2 layers × 200 units, batch 20, bptt 35, input 200. Each configuration is timed
side by side with the baseline (plain ``torch.nn.LSTM(200, 200, num_layers=2)``) in
interleaved rounds, and the table reports the median ratio, so a machine shared with other
work still gives comparable figures (absolute tokens/s are only indicative). On the CPU it
uses one thread by default: with other jobs on the machine, multi-threaded kernels wait on
each other's threads, so even two identical stacks stop timing alike and the ratios are
noise (docs/benchmarks.md, "Cells").

For the compiled path it also reports the one-off compile time and how many new graphs a
short last batch (T=17), other batch sizes and eval mode (after its first call) trigger:
0 means the compile cost is paid once.

    rnnlab bench cells                               # all cells, CPU (also: make bench)
    rnnlab bench cells --device cuda --cells lstm gru
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from rnnlab.cells.gfrnn import GatedFeedbackRNN
from rnnlab.cells.gru import GRUCell
from rnnlab.cells.lstm import LSTMCell
from rnnlab.cells.rnn import RNNReLUCell, RNNTanhCell
from rnnlab.models.blocks import BlockSpec
from rnnlab.models.stack import RecurrentStack, StackSpec

#: the example user cell, benchmarked too when running from a source checkout
USER_CELL_DIR = Path(__file__).resolve().parents[2] / "examples" / "user_cell"

SIZE, LAYERS, BATCH, BPTT = 200, 2, 20, 35
#: a fused-kernel cell without regularisers (``fused`` is set per configuration)
PLAIN = {"weight_drop": 0.0, "layer_norm": False}


def cells_available() -> dict[str, tuple[Callable, tuple[int, ...], bool]]:
    """name -> (cell factory taking ``fused``, stack widths, has a fused kernel)."""
    table = {
        "lstm": (partial(LSTMCell, **PLAIN), (SIZE,) * LAYERS, True),
        "gru": (partial(GRUCell, **PLAIN), (SIZE,) * LAYERS, True),
        "rnn_tanh": (partial(RNNTanhCell, **PLAIN), (SIZE,) * LAYERS, True),
        "rnn_relu": (partial(RNNReLUCell, **PLAIN), (SIZE,) * LAYERS, True),
        # one GF-RNN block holding both layers (the feedback spans them)
        "gfrnn": (partial(GatedFeedbackRNN, layers=LAYERS), (SIZE,), False),
    }
    if str(USER_CELL_DIR) not in sys.path and USER_CELL_DIR.is_dir():
        sys.path.insert(0, str(USER_CELL_DIR))
    try:
        from mgu import MGUCell

        # the example user cell
        table["mgu"] = (partial(MGUCell, forget_bias=1.0), (SIZE,) * LAYERS, False)
    except ImportError:
        pass
    return table


def build(factory, widths, fused: bool, compiled: bool, chunk: int, device) -> RecurrentStack:
    cell = partial(factory, fused=fused) if fused is not None else factory
    spec = StackSpec(
        cell=cell,
        hidden_sizes=widths,
        dropout=0.0,
        name="bench",
        bidirectional=False,
        locked_dropout=False,
        zoneout=0.0,
        compile=compiled,
        compile_chunk=chunk,
        scan="auto",
        scan_chunk=None,
        block=BlockSpec(residual=False, pre_norm=False, ffn="none", ffn_mult=1),
    )
    return spec.build(input_size=SIZE).to(device)


def step_fn(model: nn.Module, device, steps: int = BPTT, batch: int = BATCH) -> Callable:
    x = torch.randn(steps, batch, SIZE, device=device)

    def run() -> None:
        out, _ = model(x)  # (T, B, H)
        out.sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return run


def seconds(fn: Callable, reps: int) -> float:
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def new_graphs_after_warmup(model: RecurrentStack, device) -> int:
    """Graphs compiled by a short batch, other batch sizes and eval mode, after warm-up."""
    from torch._dynamo.utils import counters

    def eval_pass(batch: int) -> None:
        model.eval()
        with torch.no_grad():
            model(torch.randn(BPTT, batch, SIZE, device=device))
        model.train()

    eval_pass(BATCH)  # eval mode's own first compile (paid once)
    before = counters["stats"]["unique_graphs"]
    step_fn(model, device, steps=17)()  # the short last batch of an epoch
    step_fn(model, device, batch=7)()
    eval_pass(10)
    eval_pass(3)
    return counters["stats"]["unique_graphs"] - before


def run(
    *,
    device: str = "cpu",
    cells: list[str] | None = None,
    paths: tuple[str, ...] = ("fused", "stepwise", "compiled"),
    rounds: int = 5,
    reps: int = 3,
    chunk: int = 8,
    threads: int = 1,
) -> pd.DataFrame:
    """The benchmark table; progress rows go to stderr as they finish."""
    from rnnlab.errors import ConfigError

    table = cells_available()
    unknown = sorted(set(cells or []) - set(table))
    if unknown:
        raise ConfigError(
            f"Unknown cell(s) for the benchmark: {', '.join(unknown)}",
            f"Choose from {', '.join(table)}",
        )
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but torch sees no GPU", "Use --device cpu")
    dev = torch.device(device)
    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    baseline_model = nn.LSTM(SIZE, SIZE, num_layers=LAYERS).to(dev)
    baseline = step_fn(lambda x: baseline_model(x), dev)
    baseline()
    rows = []
    for name in cells or list(table):
        factory, widths, has_fused = table[name]
        for path in paths:
            if path == "fused" and not has_fused:
                continue
            fused = (path == "fused") if has_fused else None
            model = build(factory, widths, fused, path == "compiled", chunk, dev)
            assert model.path == path, (name, path, model.path)
            one = step_fn(model, dev)
            start = time.perf_counter()
            one()  # warm-up (and the compile, for the compiled path)
            first = time.perf_counter() - start
            ratios, speeds = [], []
            for _ in range(rounds):
                base = seconds(baseline, reps)
                mine = seconds(one, reps)
                ratios.append(base / mine)
                speeds.append(BPTT * BATCH / mine)
            row = {
                "cell": name,
                "path": path,
                "tokens/s": round(statistics.median(speeds)),
                "ratio to fused nn.LSTM": round(statistics.median(ratios), 3),
            }
            if path == "compiled":
                row["compile s"] = round(first, 1)
                row["new graphs"] = new_graphs_after_warmup(model, dev)
            rows.append(row)
            print(row, file=sys.stderr, flush=True)
    return pd.DataFrame(rows)


def header(device: str, rounds: int) -> str:
    return (
        f"forward+backward, {LAYERS}x{SIZE}, batch {BATCH}, bptt {BPTT}, device {device}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; ratios are medians of "
        f"{rounds} interleaved rounds against fused nn.LSTM"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--cells", nargs="*", default=None, help="subset of cell names")
    parser.add_argument("--paths", nargs="*", default=["fused", "stepwise", "compiled"])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--reps", type=int, default=3, help="passes per timing")
    parser.add_argument("--chunk", type=int, default=8, help="steps per compiled graph")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: stable ratios on a shared machine; 0: torch's default)",
    )
    args = parser.parse_args(argv)
    frame = run(
        device=args.device,
        cells=args.cells,
        paths=tuple(args.paths),
        rounds=args.rounds,
        reps=args.reps,
        chunk=args.chunk,
        threads=args.threads,
    )
    print(header(args.device, args.rounds))
    print(frame.to_string(index=False))


if __name__ == "__main__":
    main()
