"""Forward+backward speed of every cell on every path, as a ratio to fused ``nn.LSTM``.

LM sizes: 2 layers × 200 units, batch 20, input 200, bptt 35 (or each of ``lengths``). Each
configuration is timed side by side with the baseline (plain ``torch.nn.LSTM(200, 200,
num_layers=2)`` at the same length and batch) in interleaved rounds, and the table reports
the median ratio, so a machine shared with other work still gives comparable figures
(absolute tokens/s are only indicative). On the CPU it uses one thread by default: with
other jobs on the machine, multi-threaded kernels wait on each other's threads, so even two
identical stacks stop timing alike and the ratios are noise (docs/benchmarks.md, "Cells").

For the compiled path it also reports the one-off compile time and how many new graphs a
short last batch (T=17), other batch sizes and eval mode (after its first call) trigger:
0 means the compile cost is paid once. With ``lengths``, each row also has the memory one
forward+backward pass allocates at its peak (the profiler's allocation timeline on the CPU,
CUDA's own peak on a GPU) per token, beside the LSTM's, and its floating-point operations
per token (``MFLOP/token``): the LSTM's count over a cell's is the ratio its matmuls alone
would reach, against which its measured ratio is read. The last lines are
``RATIO <cell>_vs_lstm_T<T>=`` (``<cell>_<path>_vs_lstm_T<T>`` off the fused and parallel
paths).

    rnnlab bench cells                               # all cells, CPU (also: make bench)
    rnnlab bench cells --device cuda --cells lstm gru
    rnnlab bench cells --length 64,256,1024,4096     # the scan cells' parallel path vs LSTM
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from rnnlab.cells.gfrnn import GatedFeedbackRNN
from rnnlab.cells.gru import GRUCell
from rnnlab.cells.lru import LRUCell
from rnnlab.cells.lstm import LSTMCell
from rnnlab.cells.mingru import MinGRUCell
from rnnlab.cells.minlstm import MinLSTMCell
from rnnlab.cells.rnn import RNNReLUCell, RNNTanhCell
from rnnlab.models.blocks import BlockSpec
from rnnlab.models.stack import RecurrentStack, StackSpec
from rnnlab.train.allocator import tune_malloc

#: the example user cell, benchmarked too when running from a source checkout
USER_CELL_DIR = Path(__file__).resolve().parents[2] / "examples" / "user_cell"

SIZE, LAYERS, BATCH, BPTT = 200, 2, 20, 35
#: a fused-kernel cell without regularisers (``fused`` is set per configuration)
PLAIN = {"weight_drop": 0.0, "layer_norm": False}
PATHS = ("fused", "stepwise", "compiled", "parallel")
#: the cells ``--length`` times when no ``--cells`` are named: the scan cells
SCAN_CELLS = ("mingru", "minlstm", "lru")
NO_BLOCK = BlockSpec(residual=False, pre_norm=False, ffn="none", ffn_mult=1)


@dataclass(frozen=True)
class Entry:
    """A benchmarked cell: its factory, stack widths and the paths it has."""

    factory: Callable
    widths: tuple[int, ...]
    paths: tuple[str, ...]


def cells_available() -> dict[str, Entry]:
    """name -> how to build it and on which paths."""
    layers, fused, loop = (SIZE,) * LAYERS, PATHS[:3], ("stepwise", "compiled")
    scan = ("parallel", "stepwise", "compiled")
    lru = partial(LRUCell, r_min=0.4, r_max=0.99, max_phase=6.283)
    table = {
        "lstm": Entry(partial(LSTMCell, **PLAIN), layers, fused),
        "gru": Entry(partial(GRUCell, **PLAIN), layers, fused),
        "rnn_tanh": Entry(partial(RNNTanhCell, **PLAIN), layers, fused),
        "rnn_relu": Entry(partial(RNNReLUCell, **PLAIN), layers, fused),
        # one GF-RNN block holding both layers (the feedback spans them)
        "gfrnn": Entry(partial(GatedFeedbackRNN, layers=LAYERS), (SIZE,), loop),
        "mingru": Entry(MinGRUCell, layers, scan),
        "minlstm": Entry(MinLSTMCell, layers, scan),
        "lru": Entry(lru, layers, scan),
    }
    if str(USER_CELL_DIR) not in sys.path and USER_CELL_DIR.is_dir():
        sys.path.insert(0, str(USER_CELL_DIR))
    try:
        from mgu import MGUCell

        # the example user cell
        table["mgu"] = Entry(partial(MGUCell, forget_bias=1.0), layers, loop)
    except ImportError:
        pass
    return table


def build(entry: Entry, path: str, chunk: int, device) -> RecurrentStack:
    fused = "fused" in entry.paths
    cell = partial(entry.factory, fused=path == "fused") if fused else entry.factory
    scans = "parallel" in entry.paths
    spec = StackSpec(
        cell=cell,
        hidden_sizes=entry.widths,
        dropout=0.0,
        name="bench",
        bidirectional=False,
        locked_dropout=False,
        zoneout=0.0,
        compile=path == "compiled",
        compile_chunk=chunk,
        scan=("parallel" if path == "parallel" else "sequential") if scans else "auto",
        scan_chunk=None,
        block=NO_BLOCK,
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


def peak_bytes(fn: Callable, device) -> int:
    """The most memory ``fn`` holds allocated at once, beyond what existed before it."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        return torch.cuda.max_memory_allocated(device) - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    held = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        held += event.self_cpu_memory_usage  # allocations minus frees, op by op
        peak = max(peak, held)
    return peak


def mflop_per_token(entry: Entry, path: str, device) -> float:
    """Forward+backward floating-point operations per token (millions), counted by torch's
    ``FlopCounterMode`` on one bptt window; a fused kernel's are counted on its stepwise twin
    (the same matmuls, which the counter can see). The ratio of two rows' counts is the speed
    ratio their matmuls alone would give, the bound the measured ratio is read against."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build(entry, "stepwise" if path == "fused" else path, 8, device)
    x = torch.randn(BPTT, BATCH, SIZE, device=device)
    with FlopCounterMode(display=False) as counter:
        out, _ = model(x)  # (T, B, H)
        out.sum().backward()
    return counter.get_total_flops() / (BPTT * BATCH) / 1e6


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


@dataclass(frozen=True)
class Timing:
    """How to time: rounds, passes per timing, the compile chunk, and whether to measure
    memory (the length sweep does)."""

    rounds: int
    reps: int
    chunk: int
    memory: bool


def time_row(
    name: str, path: str, steps: int, entry: Entry, baseline: Callable, how: Timing, dev
) -> dict:
    """One table row: tokens/s and the median ratio to the baseline, timed in turns."""
    model = build(entry, path, how.chunk, dev)
    assert model.path == path, (name, path, model.path)
    one = step_fn(model, dev, steps=steps)
    start = time.perf_counter()
    one()  # warm-up (and the compile, for the compiled path)
    first = time.perf_counter() - start
    ratios, speeds = [], []
    for _ in range(how.rounds):
        base = seconds(baseline, how.reps)
        mine = seconds(one, how.reps)
        ratios.append(base / mine)
        speeds.append(steps * BATCH / mine)
    row = {"cell": name, "path": path, "T": steps}
    row["tokens/s"] = round(statistics.median(speeds))
    row["ratio to fused nn.LSTM"] = round(statistics.median(ratios), 3)
    if how.memory:
        peak = peak_bytes(one, dev)
        row["KiB/token"] = round(peak / (steps * BATCH) / 1024, 1)
        row["peak MiB"] = round(peak / 2**20, 1)
        row["MFLOP/token"] = round(mflop_per_token(entry, path, dev), 2)
    if path == "compiled":
        row["compile s"] = round(first, 1)
        row["new graphs"] = new_graphs_after_warmup(model, dev)
    return row


def check_choices(table: dict[str, Entry], cells: list[str] | None, device: str) -> None:
    from rnnlab.errors import ConfigError

    unknown = sorted(set(cells or []) - set(table))
    if unknown:
        raise ConfigError(
            f"Unknown cell(s) for the benchmark: {', '.join(unknown)}",
            f"Choose from {', '.join(table)}",
        )
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but torch sees no GPU", "Use --device cpu")


def run(
    *,
    device: str = "cpu",
    cells: list[str] | None = None,
    paths: tuple[str, ...] | None = None,
    rounds: int = 5,
    reps: int = 3,
    chunk: int = 8,
    threads: int = 1,
    lengths: tuple[int, ...] | None = None,
) -> pd.DataFrame:
    """The benchmark table; progress rows go to stderr as they finish. Without ``lengths``,
    every cell at bptt 35; with them, each length (default: the scan cells' parallel path),
    with the memory of each pass and the LSTM's own row at each length. ``paths`` None: every
    path a cell has (the fused and parallel ones with ``lengths``)."""
    table = cells_available()
    check_choices(table, cells, device)
    dev = torch.device(device)
    tune_malloc()  # as rnnlab train does: freed activations stay in the heap
    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    how = Timing(rounds=rounds, reps=reps, chunk=chunk, memory=lengths is not None)
    names = cells or (list(SCAN_CELLS) if lengths else list(table))
    paths = paths or (("fused", "parallel") if lengths else PATHS)
    lstm = nn.LSTM(SIZE, SIZE, num_layers=LAYERS).to(dev)
    rows = []
    for steps in lengths or (BPTT,):
        baseline = step_fn(lambda x: lstm(x), dev, steps=steps)
        baseline()
        if how.memory:  # the baseline's own row: its memory (its ratio is 1 by definition)
            rows.append(time_row("lstm", "fused", steps, table["lstm"], baseline, how, dev))
            print(rows[-1], file=sys.stderr, flush=True)
        for name in names:
            for path in (p for p in paths if p in table[name].paths):
                if how.memory and (name, path) == ("lstm", "fused"):
                    continue
                rows.append(time_row(name, path, steps, table[name], baseline, how, dev))
                print(rows[-1], file=sys.stderr, flush=True)
    return pd.DataFrame(rows)


def ratio_lines(frame: pd.DataFrame) -> list[str]:
    """``RATIO name=x.xx`` for every row but the baseline's own."""
    lines = []
    for row in frame.to_dict("records"):
        cell, path, steps = row["cell"], row["path"], row["T"]
        if (cell, path) == ("lstm", "fused") and "KiB/token" in row:
            continue
        label = cell if path in ("fused", "parallel") else f"{cell}_{path}"
        lines.append(f"RATIO {label}_vs_lstm_T{steps}={row['ratio to fused nn.LSTM']:.2f}")
    return lines


def header(device: str, rounds: int) -> str:
    return (
        f"forward+backward, {LAYERS}x{SIZE}, batch {BATCH}, device {device}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; ratios are medians of "
        f"{rounds} interleaved rounds against fused nn.LSTM at the same length"
    )


def parse_lengths(text: str | None) -> tuple[int, ...] | None:
    """``64,256,1024`` -> (64, 256, 1024); positive integers only."""
    if not text:
        return None
    try:
        lengths = tuple(int(part) for part in text.split(","))
    except ValueError:
        lengths = ()
    if not lengths or min(lengths) < 1:
        raise argparse.ArgumentTypeError(f"--length takes positive integers like 64,256: {text}")
    return lengths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--cells", nargs="*", default=None, help="subset of cell names")
    parser.add_argument("--paths", nargs="*", default=None, help="default: every path")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--reps", type=int, default=3, help="passes per timing")
    parser.add_argument("--chunk", type=int, default=8, help="steps per compiled graph")
    parser.add_argument("--length", type=parse_lengths, default=None, help="e.g. 64,256,1024")
    parser.add_argument("--quick", action="store_true", help="one round of one pass")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: stable ratios on a shared machine; 0: torch's default)",
    )
    args = parser.parse_args(argv)
    rounds, reps = (1, 1) if args.quick else (args.rounds, args.reps)
    frame = run(
        device=args.device,
        cells=args.cells,
        paths=tuple(args.paths) if args.paths else None,
        rounds=rounds,
        reps=reps,
        chunk=args.chunk,
        threads=args.threads,
        lengths=args.length,
    )
    print(header(args.device, rounds))
    print(frame.to_string(index=False))
    print("\n".join(ratio_lines(frame)))


if __name__ == "__main__":
    main()
