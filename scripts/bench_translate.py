"""Translation training throughput: rnnlab's ``fit`` path against the textbook loop, side by side.

Both sides train the ``experiment=multi30k_cpu`` model (``--experiment``: another preset, e.g.
``multi30k_cpu_words`` for Moses words instead of subwords; embeddings 256, a bidirectional
LSTM encoder of 2x128, an LSTM decoder of 256 with Luong "general" attention and input
feeding, tied output embedding, dropout 0.3, label smoothing 0.1, Adam at 2e-3, clip 1.0) on
the same Multi30k de->en batches (rnnlab's task supplies them: the same tensors, in the same
order, on both sides; the preset's tokenizer and vocabularies over the whole training set, so
the output layer has the preset's size; the first ``--batches`` batches of each epoch), each in its own worker process:

* ``reference``: the loop as the well-known tutorials write it: ``nn.LSTM`` encoder over a
  packed batch, an ``nn.LSTMCell`` decoder stepped in Python, attention, combination and the
  output projection at every step, teacher forcing, the loss over the stacked logits;
* ``rnnlab``: the real path (``trainer.precision=auto`` as the preset ships: bf16 only where
  it is faster; the reference stays fp32): task, model and optimizer from the composed config, one
  epoch of ``rnnlab.train.loop.Fit.train_epoch`` (what ``rnnlab train`` runs, evaluation
  excepted); its ``tokens_per_s`` is the target tokens (EOS included) per second.

Rounds alternate which side goes first; the figure is the median of the per-round ratios; the
first round is a warm-up. The mean training loss of each side after the same steps is printed
beside it (different initialisations, same data: the two must land close).

    python scripts/bench_translate.py [--batches 40] [--rounds 4] [--threads N] [--quick]
        [--experiment multi30k_cpu_words]

Ends with ``RATIO translate_train=x.xx`` (rnnlab's target tokens/s over the reference's).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIDES = ("reference", "rnnlab")
#: the device both sides train on (scripts/gpu_speed_check.sh sets BENCH_DEVICE=cuda)
DEVICE = os.environ.get("BENCH_DEVICE", "cpu")


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from rnnlab.paths import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


def build_parts(batches: int, experiment: str):
    """The preset's parts; its task yields only the first ``batches`` of every epoch."""
    import itertools

    from rnnlab.compose import compose as build

    overrides = [f"experiment={experiment}", f"device={DEVICE}"]
    parts = build(compose([*overrides, "trainer.progress=false"]))  # precision: auto
    task = parts.task.to(parts.device)
    every = task.train_batches
    task.train_batches = lambda *, epoch: itertools.islice(every(epoch=epoch), batches)
    task.split("train")  # tokenise and build the vocabularies now, outside the timing
    return parts


def reference_model(task, *, embed: int = 256, hidden: int = 256, dropout: float = 0.3):
    """The textbook seq2seq with attention (defined here, as a tutorial would)."""
    import torch
    from torch import nn
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    class Seq2Seq(nn.Module):
        def __init__(self, src_vocab: int, tgt_vocab: int) -> None:
            super().__init__()
            self.src_embed = nn.Embedding(src_vocab, embed, padding_idx=0)
            self.tgt_embed = nn.Embedding(tgt_vocab, embed, padding_idx=0)
            self.encoder = nn.LSTM(embed, hidden // 2, bidirectional=True)
            self.bridge_h = nn.Linear(hidden, hidden)
            self.bridge_c = nn.Linear(hidden, hidden)
            self.decoder = nn.LSTMCell(embed + embed, hidden)
            self.attn = nn.Linear(hidden, hidden, bias=False)  # Luong "general"
            self.combine = nn.Linear(2 * hidden, embed, bias=False)
            self.out = nn.Linear(embed, tgt_vocab)
            self.out.weight = self.tgt_embed.weight  # tied
            self.drop = nn.Dropout(dropout)

        def forward(self, src, src_lengths, tgt_in):
            emb = self.drop(self.src_embed(src))  # (S, B, E)
            packed = pack_padded_sequence(emb, src_lengths.cpu(), enforce_sorted=False)
            out, (h, c) = self.encoder(packed)
            memory, _ = pad_packed_sequence(out)  # (S, B, H)
            h = torch.tanh(self.bridge_h(torch.cat([h[0], h[1]], dim=-1)))  # (B, H)
            c = torch.tanh(self.bridge_c(torch.cat([c[0], c[1]], dim=-1)))
            keys = self.attn(memory)  # (S, B, H)
            mask = (src[: memory.shape[0]] != 0).T  # (B, S)
            feed = memory.new_zeros(src.shape[1], embed)
            logits = []
            for t in range(tgt_in.shape[0]):  # teacher forcing: the gold previous token
                x = torch.cat([self.drop(self.tgt_embed(tgt_in[t])), feed], dim=-1)
                h, c = self.decoder(x, (h, c))
                scores = torch.einsum("bh,sbh->bs", h, keys).masked_fill(~mask, float("-inf"))
                weights = torch.softmax(scores, dim=-1)  # (B, S)
                context = torch.einsum("bs,sbh->bh", weights, memory)
                feed = torch.tanh(self.combine(torch.cat([h, context], dim=-1)))
                logits.append(self.out(self.drop(feed)))  # (B, V)
            return torch.stack(logits)  # (T, B, V)

    return Seq2Seq(len(task.src_text), len(task.tgt_text))


def build_reference(batches: int, experiment: str):
    import torch
    from torch import nn

    task = build_parts(batches, experiment).task
    task.ensure_vocab()
    torch.manual_seed(0)
    model = reference_model(task).to(DEVICE)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)

    def epoch(number: int) -> tuple[float, float]:
        model.train()
        total, tokens, seconds = 0.0, 0, 0.0
        for batch in task.train_batches(epoch=number):
            start = time.perf_counter()
            logits = model(batch.src, batch.src_lengths, batch.tgt_in)
            loss = nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]),  # (T·B, V)
                batch.tgt_out.reshape(-1),
                ignore_index=0,
                label_smoothing=0.1,
                reduction="sum",
            )
            optimizer.zero_grad()
            (loss / batch.tokens).backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            total += loss.item()
            seconds += time.perf_counter() - start
            tokens += batch.tokens
        return tokens / seconds, total / tokens

    return epoch


def build_rnnlab(batches: int, experiment: str):
    from dataclasses import replace

    import torch

    from rnnlab.train.allocator import tune_malloc
    from rnnlab.train.loop import Fit, Progress
    from rnnlab.train.recorder import MemoryRecorder
    from rnnlab.train.signals import StopRequest

    tune_malloc()  # as train_model does
    parts = build_parts(batches, experiment)
    torch.manual_seed(0)
    model = parts.task.build_model(stack=parts.stack).to(parts.device)
    optimizer = parts.optimizer(model.parameters())
    settings = replace(parts.trainer, eval_every=10**6)
    loop = Fit(model, parts.task, optimizer, None, settings, MemoryRecorder())

    def epoch(number: int) -> tuple[float, float]:
        progress = Progress(epoch=number)
        with StopRequest() as stop:
            loss, _ = loop.train_epoch(progress, stop)  # (mean loss, tokens)
        return progress.weight / progress.seconds, loss

    return epoch


def worker(side: str, batches: int, experiment: str, threads: int | None, conn) -> None:
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    try:
        build = build_rnnlab if side == "rnnlab" else build_reference
        epoch = build(batches, experiment)
        conn.send(("ready", None))
        while (ask := conn.recv()) != "stop":
            conn.send(("rate", epoch(ask)))
    except Exception as exc:  # the parent prints it and stops every worker
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=40, help="training batches per epoch")
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds after a warm-up")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per side")
    parser.add_argument("--quick", action="store_true", help="8 batches, 2 rounds")
    parser.add_argument(
        "--experiment", default="multi30k_cpu", help="the preset (multi30k_cpu_words: words)"
    )
    args = parser.parse_args()
    if args.quick:
        args.batches, args.rounds = 8, 2
    if "RNNLAB_DATA" not in os.environ and (ROOT.parent / "shared" / "datasets").is_dir():
        os.environ["RNNLAB_DATA"] = str(ROOT.parent / "shared" / "datasets")
    import torch

    ctx = mp.get_context("spawn")
    pipes, procs = {}, []
    for side in SIDES:
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=worker,
            args=(side, args.batches, args.experiment, args.threads, child),
            daemon=True,
        )
        proc.start()
        pipes[side], procs = parent, [*procs, proc]

    def ask(side: str, what):
        if what != "ready":
            pipes[side].send(what)
        kind, value = pipes[side].recv()
        if kind == "error":
            raise RuntimeError(f"{side}: {value}")
        return value

    print(
        f"Multi30k de->en training throughput, {DEVICE} ({args.threads or torch.get_num_threads()} CPU threads, torch "
        f"{torch.__version__}): {args.experiment} model, batch 64, {args.batches} batches per epoch, "
        f"{args.rounds} timed rounds after a warm-up, one process per side",
        flush=True,
    )
    ratios, rates, losses = [], {s: [] for s in SIDES}, {s: 0.0 for s in SIDES}
    try:
        for side in SIDES:
            ask(side, "ready")
        for round_no in range(args.rounds + 1):
            order = SIDES if round_no % 2 == 0 else SIDES[::-1]
            got = {side: ask(side, round_no + 1) for side in order}
            ratio = got["rnnlab"][0] / got["reference"][0]
            tag = "warm-up" if round_no == 0 else f"round {round_no}"
            cells = "   ".join(f"{s} {got[s][0]:6.0f} tok/s loss {got[s][1]:.3f}" for s in SIDES)
            print(f"  {tag:8s} {cells}   ratio {ratio:.2f}", flush=True)
            losses = {s: got[s][1] for s in SIDES}
            if round_no > 0:
                ratios.append(ratio)
                for s in SIDES:
                    rates[s].append(got[s][0])
    except RuntimeError as exc:
        print(f"bench_translate: {exc}", file=sys.stderr)
        return 2
    finally:
        for pipe in pipes.values():
            with contextlib.suppress(OSError):
                pipe.send("stop")
        for proc in procs:
            proc.join(timeout=10)
    for side in SIDES:
        print(
            f"{side:10s}: {statistics.median(rates[side]):7.0f} target tok/s (median), "
            f"train loss after {args.rounds + 1} epochs {losses[side]:.3f}"
        )
    print(f"RATIO translate_train={statistics.median(ratios):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
