"""How much of an fp32 training step is arithmetic: the basis of ``trainer.precision=auto``'s
size rule (rnnlab.train.precision.MIN_BF16_MACS).

bf16 can only shrink a step's arithmetic; the rest (Python, dispatch of a few hundred ops,
optimizer bookkeeping, autocast's own casts) stays or grows. So a step's time over the time
of the same step with next to no arithmetic bounds what bf16 could ever gain on it, even
with free arithmetic. This bench measures that bound in fp32, on this machine, for the
real ``task=lm`` path (composed config, the task's ``train_loss``, backward, clipping, SGD)
at the batch shape of ``ptb_small`` (batch 20, bptt 20) and growing model sizes:

* ``overhead``: a 2x4 LSTM over 16 words, the same op graph with almost no arithmetic;
* ``ptb_tiny``'s shape (2x32 LSTM, 500 words), ``mid`` (2x96, 2000 words), ``ptb_small``'s
  (2x200, 10,000 words), with the multiply-adds per step the size rule counts
  (:func:`rnnlab.train.precision.step_macs`).

All sizes are timed in one process, round by round in a rotating order, so a busy machine
slows them alike; each ratio is taken within a round, and the median over rounds is kept.
Random token ids stand in for a corpus (speed does not depend on the text).

    python scripts/bench_precision.py [--steps 20] [--rounds 5] [--threads N] [--quick]

It ends with ``RATIO step_over_overhead_<size>=x.xx`` lines: that size's fp32 step time over
the ``overhead`` step's, the most bf16 could speed that step up.
"""

from __future__ import annotations

import argparse
import statistics
import time

#: name -> (hidden size, vocabulary): 2-layer LSTM language models, batch 20, bptt 20
SIZES = {
    "overhead": (4, 16),
    "ptb_tiny": (32, 500),
    "mid": (96, 2000),
    "ptb_small": (200, 10000),
}
BATCH, BPTT = 20, 20


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from rnnlab.paths import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


def build(hidden: int, vocab: int):
    """One size's training step (a function timing ``steps`` steps) and its multiply-adds."""
    import torch

    from rnnlab.compose import compose as build_parts
    from rnnlab.data.vocab import Vocab
    from rnnlab.train.loop import detach_carry
    from rnnlab.train.precision import step_macs

    parts = build_parts(
        compose(
            [
                "experiment=ptb_small",
                f"cell.hidden_size={hidden}",
                f"task.batch_size={BATCH}",
                f"task.bptt={BPTT}",
                "trainer.precision=fp32",
                "device=cpu",
            ]
        )
    )
    task = parts.task
    task.load_state_dict({"vocab": Vocab([f"w{i}" for i in range(vocab)]).state_dict()})
    torch.manual_seed(0)
    model = task.build_model(stack=parts.stack)
    optimizer = parts.optimizer(model.parameters())
    ids = torch.randint(0, vocab, (BPTT + 1, BATCH))  # (bptt + 1, B)
    batch = (ids[:-1], ids[1:])  # (bptt, B) inputs and targets

    def run(steps: int) -> float:
        carry = task.init_carry(model)
        began = time.perf_counter()
        for _ in range(steps):
            loss, carry, _ = task.train_loss(model, batch, carry)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            carry = detach_carry(carry)  # truncated BPTT, as the loop does
        return (time.perf_counter() - began) / steps

    return run, step_macs(model, task.step_positions())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per size per round")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (all cores)")
    parser.add_argument("--quick", action="store_true", help="5 steps, 2 rounds (< 1 min idle)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.rounds = 5, 2
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    sizes = {name: build(*shape) for name, shape in SIZES.items()}
    print(
        f"fp32 training step of a 2-layer LSTM LM, batch {BATCH}, bptt {BPTT}, CPU "
        f"({torch.get_num_threads()} threads, torch {torch.__version__}); "
        f"{args.steps} steps per size per round, {args.rounds} rounds after a warm-up",
        flush=True,
    )
    times: dict[str, list[float]] = {name: [] for name in sizes}
    ratios: dict[str, list[float]] = {name: [] for name in sizes if name != "overhead"}
    names = list(sizes)
    for round_no in range(args.rounds + 1):
        shift = round_no % len(names)
        took = {name: sizes[name][0](args.steps) for name in names[shift:] + names[:shift]}
        if round_no == 0:
            continue  # warm-up
        for name in names:
            times[name].append(took[name])
        for name in ratios:
            ratios[name].append(took[name] / took["overhead"])
    for name, (_, macs) in sizes.items():
        ms = 1000 * statistics.median(times[name])
        bound = statistics.median(ratios[name]) if name in ratios else 1.0
        print(f"  {name:10s} {macs:10.3g} multiply-adds/step  {ms:8.2f} ms/step  {bound:6.2f}x")
    for name in ratios:
        print(f"RATIO step_over_overhead_{name}={statistics.median(ratios[name]):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
