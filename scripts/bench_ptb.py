"""Training throughput of rnnlab's ``ptb`` task against the textbook loop, side by side.

Every side trains the same 2-layer LSTM language model on the same PTB token streams (batch
20, bptt 35, 10k vocabulary, SGD with gradient clipping, the preset's dropout after the
embedding, between the layers and before the decoder), each in its own worker process so
that no process-wide state (allocator, thread pools, a CUDA context) leaks between sides:

* ``reference``: the textbook loop of ``ptb_reference.py`` (fp32, a ``loss.item()`` per step,
  as the tutorials write it);
* ``rnnlab fp32`` / ``rnnlab bf16``: the real path, built from the composed preset
  (``experiment=ptb_small|ptb_medium|ptb_large task.bptt=35``) and driven by
  ``rnnlab.train.loop.Fit.train_epoch`` with the optimizer ``rnnlab train`` makes
  (rnnlab.train.optim: fused on CUDA); bf16 only where ``trainer.precision=auto`` picks it,
  or with ``--bf16``;
* ``rnnlab graphs`` (``--graphs``, CUDA): the auto precision with ``trainer.cuda_graphs=on``,
  the measurement that decides what ``cuda_graphs=auto`` should do (rnnlab.train.graphs);
* ``reference + malloc`` (CPU only): the textbook loop with rnnlab's allocator tuning.

Sizes (``--sizes``): small 2x200, medium 2x650, large 2x1500 (``--tiny``: 2x16/24/32, to
check the script itself on a CPU in seconds). Each round asks every side for one epoch of
``--tokens`` training tokens, in a rotating order; ratios to the reference are taken within a
round, then the median over rounds. The first round is the warm-up (allocator, cuDNN autotune,
compilation): printed apart, with its seconds, and excluded.

Where a side trains in a lower precision than fp32, ``--check-tokens`` trains both rnnlab
precisions for one epoch from the same initial weights and compares their validation
perplexity: the lower precision's speed counts for the RATIO only within 2 % of fp32's;
otherwise the RATIO is fp32's.

    python scripts/bench_ptb.py [--quick]                        # CPU: 2x200, 28k tokens, 5 rounds
    BENCH_DEVICE=cuda python scripts/bench_ptb.py [--graphs]      # CUDA protocol (below)
    BENCH_DEVICE=cpu python scripts/bench_ptb.py --quick --tiny --sizes small,medium,large

The CUDA protocol (the defaults under ``BENCH_DEVICE=cuda``): sizes small, medium and large,
5 timed rounds of 200,000 tokens after the warm-up, the epoch-1 validation check on the whole
training set. It ends with ``RATIO ptb_train_cuda_<size>=x.xx`` per size (on the CPU
``RATIO ptb_train_cpu_<size>=``, and ``RATIO ptb_train=`` for 2x200 as before).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sidebyside import Workers, compose, cuda_versions, precision_counts, rotating_rounds, serve

ROOT = Path(__file__).resolve().parent.parent
#: the device every side trains on (scripts/gpu_check.sh sets BENCH_DEVICE=cuda)
DEVICE = os.environ.get("BENCH_DEVICE", "cpu")
#: size -> (preset, hidden size); --tiny replaces the hidden size
SIZES = {"small": ("ptb_small", 200), "medium": ("ptb_medium", 650), "large": ("ptb_large", 1500)}
TINY = {"small": 16, "medium": 24, "large": 32}


def size_overrides(size: str, *, tiny: bool, tokens: int | None) -> list[str]:
    """The rnnlab config of one size: the preset at bptt 35, batch 20."""
    preset, _ = SIZES[size]
    found = [
        f"experiment={preset}",
        "task.bptt=35",
        "task.batch_size=20",
        f"task.max_tokens={tokens if tokens else 'null'}",
        "trainer.progress=false",
        f"device={DEVICE}",
    ]
    return found + ([f"cell.hidden_size={TINY[size]}"] if tiny else [])


def auto_precision(size: str, *, tiny: bool) -> tuple[str, str]:
    """What ``trainer.precision=auto`` picks for one size's model here, and why (its rules
    read the task and the model's multiply-adds per step)."""
    import torch

    from rnnlab.compose import compose as build
    from rnnlab.train.precision import resolve_precision, workload

    parts = build(compose(size_overrides(size, tiny=tiny, tokens=None)))
    model = parts.task.build_model(stack=parts.stack)
    return resolve_precision("auto", torch.device(DEVICE), workload(parts.task, model))


def rnnlab_loop(size: str, *, tiny: bool, tokens: int | None, precision: str, graphs: bool):
    """rnnlab's task, model, optimizer and training loop for one side, as ``rnnlab train``
    builds them (seed 0, so every build starts from the same weights)."""
    from dataclasses import replace

    import torch

    from rnnlab.compose import compose as build
    from rnnlab.train.loop import Fit
    from rnnlab.train.optim import make_optimizer
    from rnnlab.train.recorder import MemoryRecorder

    extra = [f"trainer.precision={precision}", f"trainer.cuda_graphs={'on' if graphs else 'off'}"]
    parts = build(compose(size_overrides(size, tiny=tiny, tokens=tokens) + extra))
    task = parts.task.to(parts.device)
    task.prepare()
    torch.manual_seed(0)
    model = task.build_model(stack=parts.stack).to(parts.device)
    optimizer, impl = make_optimizer(parts.optimizer, model.parameters(), parts.device)
    settings = replace(parts.trainer, eval_every=10**6)
    return Fit(model, task, optimizer, None, settings, MemoryRecorder()), impl


def train_one_epoch(loop, progress) -> float:
    """One epoch of ``loop`` from ``progress`` (moved on to the next); its tokens/s."""
    from rnnlab.train.signals import StopRequest

    with StopRequest() as stop:
        loop.train_epoch(progress, stop)
    rate = progress.weight / progress.seconds
    progress.epoch, progress.batches_done = progress.epoch + 1, 0
    return rate


def build_rnnlab(size: str, *, tiny: bool, tokens: int, precision: str, graphs: bool):
    """The rnnlab side: (what it runs, a function that trains one epoch, a quality check)."""
    import torch

    from rnnlab.train.allocator import tune_malloc
    from rnnlab.train.loop import Progress

    tune_malloc()  # as train_model does
    loop, impl = rnnlab_loop(size, tiny=tiny, tokens=tokens, precision=precision, graphs=graphs)
    progress = Progress()
    ran = f"{loop.precision}, optimizer {impl}, cuda graphs {'on' if loop.graphs else 'off'}"

    def check(check_tokens: int | None) -> float:
        """Validation perplexity after one epoch from the same initial weights."""
        fresh, _ = rnnlab_loop(
            size, tiny=tiny, tokens=check_tokens, precision=precision, graphs=graphs
        )
        train_one_epoch(fresh, Progress())
        fresh.model.eval()
        with torch.no_grad():
            return fresh.task.evaluate(fresh.model, "val").metrics["val/ppl"]

    return ran, lambda: train_one_epoch(loop, progress), check


def build_reference(size: str, *, tiny: bool, tokens: int, malloc: bool):
    """The textbook side on the same streams (the rnnlab task only supplies the data)."""
    import torch
    from ptb_reference import ReferenceLM, train_epoch

    from rnnlab.compose import compose as build
    from rnnlab.train.allocator import tune_malloc

    if malloc:
        tune_malloc()
    parts = build(compose(size_overrides(size, tiny=tiny, tokens=tokens)))
    task = parts.task.to(parts.device)
    data = task.split_streams("train").long()  # (T, 20) int64: the same streams as every side
    hidden, dropout = parts.stack.hidden_sizes[-1], parts.stack.dropout
    torch.manual_seed(0)
    model = ReferenceLM(len(task.get_vocab()), hidden, hidden, dropout=dropout).to(DEVICE)
    optimizer = torch.optim.SGD(model.parameters(), lr=20.0)

    def epoch() -> float:
        _, count, seconds = train_epoch(model, optimizer, data, bptt=35)
        return count / seconds

    return "fp32 (textbook loop)", epoch, None


def build_side(side: str, job: dict) -> dict:
    """One side's request handlers: ``epoch`` (tokens/s and seconds of one epoch), and for
    rnnlab sides ``check`` (validation ppl after one epoch from the initial weights)."""
    import time

    size, tiny, tokens = job["size"], job["tiny"], job["tokens"]
    if side.startswith("rnnlab"):
        precision = job["auto"] if side == "rnnlab graphs" else side.split()[-1]
        graphs = side == "rnnlab graphs"
        ran, epoch, check = build_rnnlab(
            size, tiny=tiny, tokens=tokens, precision=precision, graphs=graphs
        )
    else:
        malloc = side.endswith("malloc")
        ran, epoch, check = build_reference(size, tiny=tiny, tokens=tokens, malloc=malloc)

    def timed(_round: int) -> tuple[float, float]:
        start = time.perf_counter()
        return epoch(), time.perf_counter() - start

    return {"ran": ran, "epoch": timed, "check": check}


def worker(side: str, job: dict, conn) -> None:
    serve(lambda: build_side(side, job), conn)


def quality_check(workers: Workers, check_tokens: int | None, low: str = "bf16") -> bool:
    """Whether ``low``'s epoch-1 validation ppl is within 2 % of fp32's (both train one
    epoch from the same initial weights). ``--tiny`` without a bf16 side checks fp32 against
    itself, so the path runs where bf16 cannot."""
    fp32 = workers.ask("rnnlab fp32", "check", check_tokens)
    other = workers.ask(f"rnnlab {low}", "check", check_tokens)
    where = f"1 epoch of {check_tokens} tokens" if check_tokens else "epoch 1 (whole train set)"
    return precision_counts(fp32, other, low_name=low, where=where)


def bench_size(size: str, args, auto: str) -> dict[str, float]:
    """Every side of one size: the rounds, the check, the summary; RATIO values."""
    sides = ["reference"] + (["reference + malloc"] if DEVICE == "cpu" else [])
    sides += ["rnnlab fp32"] + (["rnnlab bf16"] if args.bf16 or auto == "bf16" else [])
    sides += ["rnnlab graphs"] if args.graphs else []
    job = {"size": size, "tiny": args.tiny, "tokens": args.tokens, "auto": auto}
    hidden = TINY[size] if args.tiny else SIZES[size][1]
    print(
        f"== {size}: 2x{hidden} LSTM, batch 20, bptt 35, vocab 10000, ~{args.tokens} tokens per "
        f"round, {args.rounds} timed rounds after a warm-up, one process per side",
        flush=True,
    )
    workers = Workers(worker, tuple(sides), job)
    try:
        got = rotating_rounds(
            tuple(sides), args.rounds, lambda side, n: workers.ask(side, "epoch", n)
        )
        rates = {side: [answer[0] for answer in got[side]] for side in sides}
        low = "bf16" if "rnnlab bf16" in sides else ("fp32" if args.tiny else None)
        checked = args.check and low is not None
        counts = quality_check(workers, args.check_tokens, low) if checked else True
    finally:
        workers.close()
    return summarise(size, sides, workers.ran, rates, auto=auto if counts else "fp32")


def summarise(size: str, sides, ran, rates, *, auto: str) -> dict[str, float]:
    ratios = {s: [r / b for r, b in zip(rates[s], rates["reference"], strict=True)] for s in sides}
    for side in sides:
        print(
            f"  {side:20s} {statistics.median(rates[side]):9.0f} tok/s  "
            f"{statistics.median(ratios[side]):.2f}x  (ran: {ran[side]})"
        )
    found = {f"ptb_train_{DEVICE}_{size}": statistics.median(ratios[f"rnnlab {auto}"])}
    if "rnnlab graphs" in sides:
        found[f"ptb_train_{DEVICE}_{size}_graphs"] = statistics.median(ratios["rnnlab graphs"])
    return found


def parse() -> argparse.Namespace:
    cuda = DEVICE.startswith("cuda")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="small,medium,large" if cuda else "small")
    parser.add_argument("--tokens", type=int, default=200_000 if cuda else 28_000)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds after a warm-up")
    parser.add_argument("--quick", action="store_true", help="4000 tokens, 1 round")
    parser.add_argument("--tiny", action="store_true", help="2x16/24/32 LSTMs: checks the script")
    parser.add_argument("--bf16", action="store_true", help="time bf16 even where auto says no")
    parser.add_argument("--graphs", action="store_true", help="a trainer.cuda_graphs=on side")
    parser.add_argument("--no-check", dest="check", action="store_false")
    parser.add_argument(
        "--check-tokens",
        type=int,
        default=None,
        help="training tokens of the ppl check (default: CUDA the whole training set, CPU "
        "100,000, --quick 20,000)",
    )
    args = parser.parse_args()
    if args.quick:
        args.tokens, args.rounds = 4000, 1
    if args.check_tokens is None and not cuda:
        args.check_tokens = 20_000 if args.quick else 100_000
    elif args.check_tokens is None and args.quick:
        args.check_tokens = 200_000
    if cuda and not args.quick and (args.tokens < 200_000 or args.rounds < 5):
        print("note: below the CUDA protocol (>= 5 rounds of >= 200,000 tokens)", flush=True)
    return args


def main() -> int:
    args = parse()
    if "RNNLAB_DATA" not in os.environ and (ROOT.parent / "shared" / "datasets").is_dir():
        os.environ["RNNLAB_DATA"] = str(ROOT.parent / "shared" / "datasets")
    print(f"PTB training throughput on {DEVICE}: {cuda_versions()}", flush=True)
    found: dict[str, float] = {}
    try:
        for size in args.sizes.split(","):  # each size's RATIO as soon as it is known
            auto, why = auto_precision(size, tiny=args.tiny)
            print(f"{size}: trainer.precision=auto picks {auto} here ({why})", flush=True)
            ratios = bench_size(size, args, auto)
            for name, value in ratios.items():
                print(f"RATIO {name}={value:.2f}", flush=True)
            found.update(ratios)
    except RuntimeError as exc:
        print(f"bench_ptb: {exc}", file=sys.stderr)
        return 2
    if DEVICE == "cpu" and not args.tiny and "ptb_train_cpu_small" in found:
        print(f"RATIO ptb_train={found['ptb_train_cpu_small']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
