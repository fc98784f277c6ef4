"""Decoding speed on Multi30k test2016: batched beam search against greedy and per-sentence beam.

Three decoders run on the same model and the same test2016 source sentences:

* ``greedy``: batched greedy decoding (``task.decode(beam_size=1)``, sorted batches of
  ``task.eval_batch_size``);
* ``beam K batched``: rnnlab's beam search, B sentences x K hypotheses as B·K rows at once
  (``task.decode(beam_size=K)``, what test-time evaluation and ``rnnlab translate`` run);
* ``beam K per sentence``: the same beam search one sentence at a time (batch of 1), as a
  textbook implementation runs it; on the first ``--per-sentence`` sentences only (it is slow).

It prints sentences/s and BLEU for each, checks that the batched beam gives the per-sentence
beam's hypotheses, and ends with ``RATIO beam5_vs_greedy=x.xx`` (batched beam's decoding time
over greedy's: the cost of the beam) and ``RATIO beam5_batched_speedup=x.xx`` (per-sentence
beam's time per sentence over the batched beam's). Rounds alternate the order; medians.

The model: a finished translation run (``--run RUN_ID [--uri URI]``, e.g. ``multi30k_cpu``),
or, without one, the ``multi30k_tiny`` model trained here for a few epochs (``--quick``).

    python scripts/bench_decode.py [--run RUN_ID] [--uri URI] [--beam 5] [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from rnnlab.paths import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


def trained_here(epochs: int, sentences: int):
    """The multi30k_tiny model trained for ``epochs`` on ``sentences`` pairs (fp32), through
    rnnlab's training step without the per-epoch evaluation."""
    import torch

    from rnnlab.compose import compose as build
    from rnnlab.train.loop import Fit, Progress
    from rnnlab.train.recorder import MemoryRecorder
    from rnnlab.train.signals import StopRequest

    overrides = ["experiment=multi30k_tiny", f"task.max_train={sentences}", "task.max_eval=null"]
    cfg = compose([*overrides, "device=cpu", "trainer.progress=false", "trainer.precision=fp32"])
    parts = build(cfg)
    torch.manual_seed(0)
    model = parts.task.build_model(stack=parts.stack)
    optimizer = parts.optimizer(model.parameters())
    loop = Fit(model, parts.task, optimizer, None, parts.trainer, MemoryRecorder())
    with StopRequest() as stop:
        for epoch in range(1, epochs + 1):
            loop.train_epoch(Progress(epoch=epoch), stop)
    return parts.task, model.eval()


def per_sentence_beam(task, model, src_ids, *, beam: int) -> list[list[int]]:
    from rnnlab.models.beam import beam_decode
    from rnnlab.tasks.translate import BOS, EOS

    out = []
    for ids in src_ids:
        batch = task.make_batch([ids], None)
        out += beam_decode(
            model, batch.src, batch.src_lengths, bos_index=BOS, eos_index=EOS,
            max_len=task.options.max_decode_len, beam_size=beam, alpha=task.options.length_penalty,
        )  # fmt: skip
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default=None, help="a finished translation run's id")
    parser.add_argument("--uri", default=None, help="its tracking store")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=None, help="test sentences (all)")
    parser.add_argument("--per-sentence", type=int, default=200, help="sentences for per-sentence")
    parser.add_argument("--quick", action="store_true", help="a tiny model, 300 sentences, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.sentences, args.per_sentence = 1, args.sentences or 300, 100
    if "RNNLAB_DATA" not in os.environ and (ROOT.parent / "shared" / "datasets").is_dir():
        os.environ["RNNLAB_DATA"] = str(ROOT.parent / "shared" / "datasets")
    import torch

    if args.run:
        from rnnlab.session.restore import load_run
        from rnnlab.tracking.uri import resolve_tracking_uri

        restored = load_run(args.run, uri=resolve_tracking_uri(args.uri), device="cpu")
        task, model, what = restored.task, restored.model, f"run {args.run}"
    else:
        task, model = trained_here(epochs=4, sentences=2000)
        what = "multi30k_tiny trained here (4 epochs, 2000 pairs)"
    data = task.split("test")
    n = min(args.sentences or len(data.src_ids), len(data.src_ids))
    src, refs = data.src_ids[:n], data.tgt_raw[:n]
    print(
        f"Decoding test2016 ({n} sentences), {what}, CPU ({torch.get_num_threads()} threads), "
        f"batch {task.options.eval_batch_size}, beam {args.beam}, {args.rounds} round(s)",
        flush=True,
    )
    k = args.beam
    few = args.per_sentence
    sides = {
        "greedy": lambda: task.decode(model, src, beam_size=1),
        f"beam {k} batched": lambda: task.decode(model, src, beam_size=k),
        f"beam {k} per sentence": lambda: per_sentence_beam(task, model, src[:few], beam=k),
    }
    seconds: dict[str, list[float]] = {s: [] for s in sides}
    hyps: dict[str, list[list[int]]] = {}
    with torch.inference_mode():
        for round_no in range(args.rounds):
            names = list(sides) if round_no % 2 == 0 else list(sides)[::-1]
            for name in names:
                start = time.perf_counter()
                hyps[name] = sides[name]()
                seconds[name].append(time.perf_counter() - start)
    counts = {name: n for name in sides}
    counts[f"beam {k} per sentence"] = min(few, n)
    print(f"{'decoder':24s} {'sentences/s':>12s} {'BLEU':>7s}")
    for name in sides:
        rate = counts[name] / statistics.median(seconds[name])
        got = [task.detokenize(h) for h in hyps[name]]
        bleu, _ = task.bleu(got, refs[: len(got)])
        print(f"{name:24s} {rate:12.1f} {bleu:7.2f}")
    same = hyps[f"beam {k} batched"][:few] == hyps[f"beam {k} per sentence"]
    print(
        f"batched beam == per-sentence beam on the first {counts[f'beam {k} per sentence']}: {same}"
    )
    greedy = statistics.median(seconds["greedy"])
    batched = statistics.median(seconds[f"beam {k} batched"])
    single = statistics.median(seconds[f"beam {k} per sentence"]) / counts[f"beam {k} per sentence"]
    print(f"RATIO beam{k}_vs_greedy={batched / greedy:.2f}")
    print(f"RATIO beam{k}_batched_speedup={single / (batched / n):.2f}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
