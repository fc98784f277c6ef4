"""Training throughput of rnnlab's ``ptb`` task against the textbook loop, side by side.

Both train a 2x200 LSTM on the same PTB token streams (batch 20, bptt 35, 10k vocabulary,
SGD with gradient clipping) on the CPU. rnnlab's side is the real path: the task and model
built from the composed config (``experiment=ptb_small task.bptt=35``) and driven by
``rnnlab.train.loop.fit``, whose per-epoch ``tokens_per_s`` is read back. Rounds alternate
(reference, rnnlab, ...) so a busy machine slows both alike, and the ratio is taken within
each round (adjacent measurements) before the median over rounds; the first round is a
warm-up. Prints each side's median tokens/s and the median ratio rnnlab / reference.

    python scripts/bench_ptb.py [--tokens 14000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ptb_reference import ReferenceLM, train_epoch  # noqa: E402


class Sink:
    def __init__(self) -> None:
        self.metrics: list[dict[str, float]] = []

    def log_metrics(self, metrics: dict[str, float], *, step: int) -> None:
        self.metrics.append(dict(metrics))


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from rnnlab.paths import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=14000, help="training tokens per round")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per side")
    args = parser.parse_args()
    if "RNNLAB_DATA" not in os.environ and (ROOT.parent / "shared" / "datasets").is_dir():
        os.environ["RNNLAB_DATA"] = str(ROOT.parent / "shared" / "datasets")

    from dataclasses import replace

    from rnnlab.app import compose as build
    from rnnlab.errors import RnnlabError
    from rnnlab.train.loop import fit

    cfg = compose(
        [
            "experiment=ptb_small",
            "task.bptt=35",
            f"task.max_tokens={args.tokens}",
            "trainer.max_epochs=1",
            "trainer.progress=false",
            "device=cpu",
        ]
    )
    torch.manual_seed(0)
    try:
        parts = build(cfg)
        task = parts.task
        data = task.split_streams("train")  # (T, 20): the same streams for both sides
        model = task.build_model(stack=parts.stack)
    except RnnlabError as exc:
        print(f"bench_ptb: {exc}", file=sys.stderr)
        return 2
    optimizer = parts.optimizer(model.parameters())
    settings = replace(parts.settings, eval_every=10**6)
    vocab = len(task.get_vocab())

    reference = ReferenceLM(vocab)
    ref_optimizer = torch.optim.SGD(reference.parameters(), lr=20.0)

    print(
        f"PTB training throughput, CPU ({torch.get_num_threads()} threads, torch "
        f"{torch.__version__}): 2x200 LSTM, batch 20, bptt 35, vocab {vocab}, "
        f"{data.numel()} tokens per round, {args.rounds} timed rounds after a warm-up"
    )
    ref_rates: list[float] = []
    ours_rates: list[float] = []
    ratios: list[float] = []

    def run_reference() -> float:
        _, tokens, seconds = train_epoch(reference, ref_optimizer, data, bptt=35)
        return tokens / seconds

    def run_rnnlab() -> float:
        sink = Sink()
        fit(
            model=model,
            task=task,
            optimizer=optimizer,
            scheduler=None,
            settings=settings,
            sink=sink,
        )
        return next(m["tokens_per_s"] for m in sink.metrics if "tokens_per_s" in m)

    for round_no in range(args.rounds + 1):
        if round_no % 2 == 0:  # alternate who goes first, so neither always meets the same load
            ref, ours = run_reference(), run_rnnlab()
        else:
            ours, ref = run_rnnlab(), run_reference()
        tag = "warm-up" if round_no == 0 else f"round {round_no}"
        print(
            f"  {tag:8s} reference {ref:8.0f} tok/s   rnnlab {ours:8.0f} tok/s"
            f"   ratio {ours / ref:.2f}x",
            flush=True,
        )
        if round_no > 0:
            ref_rates.append(ref)
            ours_rates.append(ours)
            ratios.append(ours / ref)
    ref_med, ours_med = statistics.median(ref_rates), statistics.median(ours_rates)
    print(f"reference loop (fused nn.LSTM): {ref_med:8.0f} tok/s (median)")
    print(f"rnnlab ptb task + loop        : {ours_med:8.0f} tok/s (median)")
    print(f"ratio rnnlab / reference      : {statistics.median(ratios):.2f}x (median per round)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
