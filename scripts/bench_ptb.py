"""Training throughput of rnnlab's ``ptb`` task against the textbook loop, side by side.

Every side trains a 2x200 LSTM on the same PTB token streams (batch 20, bptt 35, 10k
vocabulary, SGD with gradient clipping) on the CPU, each in its own worker process so that
no process-wide state (allocator, thread pools) leaks from one side into another:

* ``reference``: the textbook loop of ``ptb_reference.py`` in a plain Python process;
* ``rnnlab fp32`` / ``rnnlab bf16``: the real path (bf16 only where ``trainer.precision=auto``
  picks it, or with ``--bf16``; the header says what auto picks here and why), as ``rnnlab train`` runs it: the task and
  model built from the composed config (``experiment=ptb_small task.bptt=35``), the process
  set up by ``train_model``'s allocator tuning (``rnnlab.train.allocator``), driven by
  ``rnnlab.train.loop.fit`` with ``trainer.precision=fp32`` or ``bf16``; the per-epoch
  ``tokens_per_s`` is read back;
* ``reference + malloc``: the textbook loop with rnnlab's allocator tuning, to show how much
  of the difference is that process setting rather than the loop.

Each round asks every worker for one epoch in turn, in a rotating order, so a busy machine
slows all sides alike; ratios to the reference are taken within a round before the median
over rounds; the first round is a warm-up.

    python scripts/bench_ptb.py [--tokens 28000] [--rounds 5] [--bptt 35] [--quick] [--bf16]

It ends with ``RATIO ptb_train=x.xx``: rnnlab's tokens/s in the precision ``auto`` picks, over
the textbook loop's (median of the per-round ratios).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: the device every side trains on (scripts/gpu_speed_check.sh sets BENCH_DEVICE=cuda)
DEVICE = os.environ.get("BENCH_DEVICE", "cpu")
ALL_SIDES = ("reference", "reference + malloc", "rnnlab fp32", "rnnlab bf16")


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from rnnlab.paths import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


def build_rnnlab(*, precision: str, tokens: int, bptt: int):
    """The rnnlab side: config -> task, model, optimizer; a function that trains one epoch."""
    from dataclasses import replace

    import torch

    from rnnlab.compose import compose as build
    from rnnlab.train.allocator import tune_malloc
    from rnnlab.train.loop import fit
    from rnnlab.train.recorder import MemoryRecorder

    tune_malloc()  # as train_model does
    cfg = compose(
        [
            "experiment=ptb_small",
            f"task.bptt={bptt}",
            f"task.max_tokens={tokens}",
            "trainer.max_epochs=1",
            "trainer.progress=false",
            f"trainer.precision={precision}",
            f"device={DEVICE}",
        ]
    )
    torch.manual_seed(0)
    parts = build(cfg)
    model = parts.task.build_model(stack=parts.stack)
    optimizer = parts.optimizer(model.parameters())
    settings = replace(parts.trainer, eval_every=10**6)

    def epoch() -> float:
        recorder = MemoryRecorder()
        fit(
            model=model,
            task=parts.task,
            optimizer=optimizer,
            scheduler=None,
            settings=settings,
            recorder=recorder,
        )
        return next(m["tokens_per_s"] for _, m in recorder.metrics if "tokens_per_s" in m)

    return epoch


def build_reference(*, tokens: int, bptt: int, malloc: bool):
    """The textbook side on the same streams (the rnnlab task only supplies the data)."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ptb_reference import ReferenceLM, train_epoch

    from rnnlab.compose import compose as build
    from rnnlab.train.allocator import tune_malloc

    if malloc:
        tune_malloc()
    cfg = compose(["experiment=ptb_small", f"task.max_tokens={tokens}", f"device={DEVICE}"])
    task = build(cfg).task
    task.to(torch.device(DEVICE))
    data = task.split_streams("train")  # (T, 20): the same streams as every other side
    torch.manual_seed(0)
    model = ReferenceLM(len(task.get_vocab())).to(DEVICE)
    optimizer = torch.optim.SGD(model.parameters(), lr=20.0)

    def epoch() -> float:
        _, count, seconds = train_epoch(model, optimizer, data, bptt=bptt)
        return count / seconds

    return epoch


def worker(side: str, tokens: int, bptt: int, conn) -> None:
    """Build ``side``, then train one epoch per request and send back its tokens/s."""
    try:
        if side.startswith("rnnlab"):
            epoch = build_rnnlab(precision=side.split()[-1], tokens=tokens, bptt=bptt)
        else:
            epoch = build_reference(tokens=tokens, bptt=bptt, malloc=side.endswith("malloc"))
        conn.send(("ready", None))
        while conn.recv() == "epoch":
            conn.send(("rate", epoch()))
    except Exception as exc:  # the parent prints it and stops every worker
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


def auto_precision(bptt: int) -> tuple[str, str]:
    """What ``trainer.precision=auto`` picks for the benchmarked model here, and why."""
    import torch

    from rnnlab.compose import compose as build
    from rnnlab.train.precision import resolve_precision, workload

    parts = build(compose(["experiment=ptb_small", f"task.bptt={bptt}", f"device={DEVICE}"]))
    model = parts.task.build_model(stack=parts.stack)
    return resolve_precision("auto", torch.device(DEVICE), workload(parts.task, model))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=28000, help="training tokens per round")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per side")
    parser.add_argument(
        "--bptt", type=int, default=35, help="window length (35: the textbook; ptb_small: 20)"
    )
    parser.add_argument("--quick", action="store_true", help="4000 tokens, 1 round (< 3 min idle)")
    parser.add_argument("--bf16", action="store_true", help="time bf16 even where auto says no")
    args = parser.parse_args()
    if args.quick:
        args.tokens, args.rounds = 4000, 1
    if "RNNLAB_DATA" not in os.environ and (ROOT.parent / "shared" / "datasets").is_dir():
        os.environ["RNNLAB_DATA"] = str(ROOT.parent / "shared" / "datasets")

    import torch

    auto, why = auto_precision(args.bptt)
    sides = tuple(s for s in ALL_SIDES if s != "rnnlab bf16" or args.bf16 or auto == "bf16")
    print(f"trainer.precision=auto picks {auto} here ({why})", flush=True)
    ctx = mp.get_context("spawn")
    pipes, procs = {}, []
    for side in sides:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=worker, args=(side, args.tokens, args.bptt, child), daemon=True)
        proc.start()
        pipes[side] = parent
        procs.append(proc)

    def ask(side: str, what: str) -> float | None:
        if what == "epoch":
            pipes[side].send("epoch")
        kind, value = pipes[side].recv()
        if kind == "error":
            raise RuntimeError(f"{side}: {value}")
        return value

    print(
        f"PTB training throughput, {DEVICE} ({torch.get_num_threads()} CPU threads, torch "
        f"{torch.__version__}): 2x200 LSTM, "
        f"batch 20, bptt {args.bptt}, vocab 10000, ~{args.tokens} tokens per epoch, "
        f"{args.rounds} timed rounds after a warm-up, one process per side",
        flush=True,
    )
    rates: dict[str, list[float]] = {side: [] for side in sides}
    ratios: dict[str, list[float]] = {side: [] for side in sides[1:]}
    try:
        for side in sides:
            ask(side, "ready")
        for round_no in range(args.rounds + 1):
            shift = round_no % len(sides)  # rotate who goes first
            order = sides[shift:] + sides[:shift]
            rate = {side: ask(side, "epoch") for side in order}
            tag = "warm-up" if round_no == 0 else f"round {round_no}"
            cells = [f"{rate['reference']:6.0f}"] + [
                f"{rate[side]:6.0f} ({rate[side] / rate['reference']:.2f}x)" for side in sides[1:]
            ]
            print(f"  {tag:8s} " + "   ".join(cells), flush=True)
            if round_no > 0:
                for side in sides:
                    rates[side].append(rate[side])
                for side in ratios:
                    ratios[side].append(rate[side] / rate["reference"])
    except RuntimeError as exc:
        print(f"bench_ptb: {exc}", file=sys.stderr)
        return 2
    finally:
        for pipe in pipes.values():
            with contextlib.suppress(OSError):  # a worker that failed has gone already
                pipe.send("stop")
        for proc in procs:
            proc.join(timeout=10)
    print("  (columns: " + ", ".join(sides) + "; tok/s and ratio to the reference)")
    print(f"{'reference (textbook loop)':28s}: {statistics.median(rates['reference']):7.0f} tok/s")
    for side in ratios:
        print(
            f"{side:28s}: {statistics.median(rates[side]):7.0f} tok/s, "
            f"{statistics.median(ratios[side]):.2f}x the reference (median per round)"
        )
    print(f"RATIO ptb_train={statistics.median(ratios[f'rnnlab {auto}']):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
