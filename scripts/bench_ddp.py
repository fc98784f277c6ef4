"""Data-parallel throughput on the CPU: ``trainer.devices=2`` against one process, side by side.

Both sides are real ``rnnlab train`` processes on ``experiment=ptb_small`` (2x200 LSTM,
fp32, bptt 20) with the same effective batch and the same total threads:

* ``one process``: ``task.batch_size=2b``, ``OMP_NUM_THREADS=2``;
* ``ddp 2 proc``: ``trainer.devices=2``, ``task.batch_size=b`` per rank, ``OMP_NUM_THREADS=1``
  in each rank (gloo all-reduces the gradients every step).

Each round runs both sides once, in alternating order, and reads the last epoch's
``tokens_per_s`` (every rank's tokens over the epoch's training wall time; the first epoch is
a warm-up) from the run's MLflow store. The ratio is the median over rounds of DDP's rate
over the single process's. On a 2-core machine there is no idle core for DDP to win with:
the figure says what the gradient all-reduce and the second process cost.

    python scripts/bench_ddp.py [--quick] [--tokens 60000] [--rounds 3] [--batch 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_side(name: str, *, tokens: int, batch: int, epochs: int, folder: Path) -> float:
    """One ``rnnlab train`` process; the last epoch's tokens/s from its run."""
    from mlflow.tracking import MlflowClient

    ddp = name.startswith("ddp")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    args = [
        "experiment=ptb_small",
        "trainer.precision=fp32",
        f"task.max_tokens={tokens}",
        f"task.batch_size={batch if ddp else 2 * batch}",
        f"trainer.max_epochs={epochs}",
        f"trainer.eval_every={epochs}",
        "trainer.progress=false",
        "device=cpu",
        f"tracking.uri={uri}",
        f"tracking.experiment=bench-{name.replace(' ', '-')}",
    ]
    if ddp:
        args.append("trainer.devices=2")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["OMP_NUM_THREADS"] = "1" if ddp else "2"  # the same total threads on both sides
    done = subprocess.run(
        [sys.executable, "-m", "rnnlab", "train", *args],
        env=env,
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(f"bench-{name.replace(' ', '-')}")
    run = client.search_runs([experiment.experiment_id], order_by=["start_time DESC"])[0]
    history = client.get_metric_history(run.info.run_id, "tokens_per_s")
    return max(history, key=lambda m: m.step).value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small corpus slice, one round")
    parser.add_argument("--tokens", type=int, default=60000, help="PTB tokens per split")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=10, help="per-rank batch b (one process: 2b)")
    args = parser.parse_args()
    tokens, rounds, epochs = (12000, 1, 2) if args.quick else (args.tokens, args.rounds, 3)
    if "RNNLAB_DATA" not in os.environ and (ROOT.parent / "shared" / "datasets").is_dir():
        os.environ["RNNLAB_DATA"] = str(ROOT.parent / "shared" / "datasets")
    print(
        f"ptb_small (2x200 LSTM, fp32) on the CPU ({os.cpu_count()} cores), {tokens} tokens, "
        f"effective batch {2 * args.batch}, {rounds} round(s), tokens/s of the last of "
        f"{epochs} epochs",
        flush=True,
    )
    sides = ("one process", "ddp 2 proc")
    ratios = []
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as tmp:
        for round_no in range(rounds):
            order = sides if round_no % 2 == 0 else sides[::-1]
            rate = {}
            for side in order:
                kwargs = {"tokens": tokens, "batch": args.batch, "epochs": epochs}
                rate[side] = run_side(side, folder=Path(tmp), **kwargs)
            ratio = rate["ddp 2 proc"] / rate["one process"]
            ratios.append(ratio)
            print(
                f"  round {round_no + 1}: one process {rate['one process']:7.0f} tok/s, "
                f"ddp 2 proc {rate['ddp 2 proc']:7.0f} tok/s ({ratio:.2f}x)",
                flush=True,
            )
    print(f"RATIO ddp_2proc={statistics.median(ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
