"""A 4-job joblib sweep of ptb_tiny: the thread policy against torch's default, side by side.

Both sides run the same real sweep, ``rnnlab train -m hydra/launcher=joblib
hydra.launcher.n_jobs=4 experiment=ptb_tiny seed=1,2,3,4`` (a larger LSTM and more tokens
than the preset, so that the jobs compute rather than start up), each in a fresh folder with
its own sqlite store:

* ``policy``: ``trainer.threads=auto``, each job gets cores // 4 threads (at least 1);
* ``torch default``: ``trainer.threads=<cores>``, every job at torch's default of one thread
  per core, as a launcher that does not set ``OMP_NUM_THREADS`` leaves it (joblib's loky
  workers do set it; submitit, a shell loop or several terminals do not).

Rounds alternate which side goes first; the figures are the median over rounds of the sweep's
wall time and of the jobs' mean training ``tokens_per_s`` (read back from the store).

    python scripts/bench_sweep.py [--rounds 3] [--tokens 20000] [--quick]

Ends with ``RATIO sweep_threads=x.xx`` (torch default's wall time over the policy's) and
``RATIO sweep_threads_tokens=x.xx`` (the policy's training tokens/s over torch default's).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RNNLAB = [sys.executable, "-m", "rnnlab.cli"]


def sweep(threads: str, *, tokens: int, hidden: int, epochs: int, env: dict) -> tuple[float, float]:
    """Run the sweep in a fresh folder; (wall seconds, mean training tokens/s of its jobs)."""
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        args = [
            *RNNLAB, "train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4",
            "experiment=ptb_tiny", "seed=1,2,3,4", f"task.max_tokens={tokens}",
            f"cell.hidden_size={hidden}", f"trainer.max_epochs={epochs}",
            f"trainer.threads={threads}", "trainer.progress=false", "device=cpu",
            f"tracking.uri={uri}",
        ]  # fmt: skip
        start = time.perf_counter()
        done = subprocess.run(args, cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(
                f"sweep with trainer.threads={threads} failed:\n{done.stderr[-3000:]}"
            )
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        rates = []
        for exp in client.search_experiments():
            for run in client.search_runs([exp.experiment_id]):
                if "tokens_per_s" in run.data.metrics:
                    history = client.get_metric_history(run.info.run_id, "tokens_per_s")
                    rates.append(statistics.mean(m.value for m in history))
        if len(rates) != 4:
            raise RuntimeError(f"expected 4 jobs with tokens_per_s, found {len(rates)}")
        return wall, statistics.mean(rates)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=20000, help="training tokens per job")
    parser.add_argument("--hidden", type=int, default=200, help="LSTM width")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="1 round, 8000 tokens, 1 epoch")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.tokens, args.epochs = 1, 8000, 1
    env = dict(os.environ)
    if "RNNLAB_DATA" not in env and (ROOT.parent / "shared" / "datasets").is_dir():
        env["RNNLAB_DATA"] = str(ROOT.parent / "shared" / "datasets")
    env.pop("OMP_NUM_THREADS", None)  # the policy's own choice, not the caller's
    env.pop("MLFLOW_TRACKING_URI", None)
    cores = len(os.sched_getaffinity(0))
    sides = {"policy": "auto", "torch default": str(cores)}
    print(
        f"4-job joblib sweep of ptb_tiny (LSTM 2x{args.hidden}, {args.tokens} tokens, "
        f"{args.epochs} epoch(s)) on {cores} cores; {args.rounds} round(s), alternating",
        flush=True,
    )
    walls: dict[str, list[float]] = {s: [] for s in sides}
    rates: dict[str, list[float]] = {s: [] for s in sides}
    for round_no in range(args.rounds):
        order = list(sides) if round_no % 2 == 0 else list(sides)[::-1]
        for side in order:
            wall, rate = sweep(
                sides[side], tokens=args.tokens, hidden=args.hidden, epochs=args.epochs, env=env
            )
            walls[side].append(wall)
            rates[side].append(rate)
            print(
                f"  round {round_no + 1} {side:14s}: {wall:6.1f} s wall, {rate:7.0f} tok/s per job"
            )
    print(f"{'side':28s} {'wall (median)':>14s} {'tok/s per job':>14s}")
    for side, threads in sides.items():
        label = f"{side} (threads={threads})"
        wall, rate = statistics.median(walls[side]), statistics.median(rates[side])
        print(f"{label:28s} {wall:12.1f} s {rate:14.0f}")
    wall_ratio = statistics.median(
        d / p for d, p in zip(walls["torch default"], walls["policy"], strict=True)
    )
    rate_ratio = statistics.median(
        p / d for p, d in zip(rates["policy"], rates["torch default"], strict=True)
    )
    print(f"RATIO sweep_threads={wall_ratio:.2f}")
    print(f"RATIO sweep_threads_tokens={rate_ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
