"""Translation training throughput: rnnlab's ``fit`` path against the textbook loop, side by side,
and rnnlab's decoding speed (greedy and beam 5).

Both sides train the preset's model (``--experiment``; ``multi30k_cpu`` on the CPU: embeddings
256, a bidirectional LSTM encoder of 2x128, an LSTM decoder of 256 with Luong "general"
attention; ``multi30k_gpu`` on CUDA: 2 layers of 512, Bahdanau attention; both with input
feeding, tied output embedding, dropout, label smoothing 0.1, Adam at 2e-3, clip 1.0) on the
same Multi30k de->en batches (rnnlab's task supplies them: the same tensors, in the same order,
on both sides; the preset's tokenizer and vocabularies over the whole training set; the first
``--batches`` batches of each epoch), each in its own worker process:

* ``reference``: the loop as the well-known tutorials write it: ``nn.LSTM`` encoder over a
  packed batch, ``nn.LSTMCell`` decoder layers stepped in Python, attention, combination and
  the output projection at every step, teacher forcing, the loss over the stacked logits,
  ``loss.item()`` every step; fp32;
* ``rnnlab``: the real path (``trainer.precision=auto``: bf16 only where it is faster), task,
  model and optimizer (rnnlab.train.optim: fused on CUDA) from the composed config, one epoch
  of ``rnnlab.train.loop.Fit.train_epoch``; its ``tokens_per_s`` is the target tokens (EOS
  included) per second;
* ``rnnlab fp32``, where ``auto`` picks a lower precision: after the rounds both rnnlab sides
  (same initial weights, same batches) are scored on the validation split; the lower
  precision's speed counts only within 2 % of fp32's perplexity (else the RATIO is fp32's).

Rounds alternate which side goes first; the figure is the median of the per-round ratios; the
first round is the warm-up (cuDNN autotune, allocator), printed apart with its seconds. Then the
rnnlab side decodes ``--decode`` test sentences greedily and with a beam of 5 (sentences/s).

    python scripts/bench_translate.py [--batches 40] [--rounds 4] [--threads N] [--quick]
    BENCH_DEVICE=cuda python scripts/bench_translate.py          # multi30k_gpu, 5 x 100 batches
    BENCH_DEVICE=cpu python scripts/bench_translate.py --quick --experiment multi30k_tiny

Ends with ``RATIO translate_train=x.xx`` on the CPU, ``RATIO translate_train_cuda=x.xx`` on CUDA
(rnnlab's target tokens/s over the reference's).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sidebyside import Workers, compose, cuda_versions, precision_counts, rotating_rounds, serve

ROOT = Path(__file__).resolve().parent.parent
#: the device both sides train on (scripts/gpu_check.sh sets BENCH_DEVICE=cuda)
DEVICE = os.environ.get("BENCH_DEVICE", "cpu")


def build_parts(batches: int, experiment: str, precision: str = "auto"):
    """The preset's parts; its task yields only the first ``batches`` of every epoch."""
    import itertools

    from rnnlab.compose import compose as build

    overrides = [f"experiment={experiment}", f"device={DEVICE}", "trainer.progress=false"]
    parts = build(compose([*overrides, f"trainer.precision={precision}"]))
    task = parts.task.to(parts.device)
    every = task.train_batches
    task.train_batches = lambda *, epoch: itertools.islice(every(epoch=epoch), batches)
    task.split("train")  # tokenise and build the vocabularies now, outside the timing
    return parts


def reference_model(parts):
    """The textbook seq2seq with attention (defined here, as a tutorial would), at the
    preset's sizes: layers, hidden and embedding size, dropout, attention kind."""
    import torch
    from torch import nn
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    task, o = parts.task, parts.task.options
    embed, hidden, layers = o.embed_dim, parts.stack.hidden_sizes[-1], len(parts.stack.hidden_sizes)
    additive = o.attention == "bahdanau"

    class Seq2Seq(nn.Module):
        def __init__(self, src_vocab: int, tgt_vocab: int) -> None:
            super().__init__()
            self.src_embed = nn.Embedding(src_vocab, embed, padding_idx=0)
            self.tgt_embed = nn.Embedding(tgt_vocab, embed, padding_idx=0)
            self.encoder = nn.LSTM(
                embed, hidden // 2, num_layers=layers, bidirectional=True, dropout=o.dropout
            )
            self.bridge = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(2 * layers))
            sizes = [embed + embed] + [hidden] * (layers - 1)
            self.decoder = nn.ModuleList(nn.LSTMCell(size, hidden) for size in sizes)
            self.keys = nn.Linear(hidden, hidden, bias=False)  # general: W m; additive: W_k m
            self.query = nn.Linear(hidden, hidden, bias=False)  # additive only
            self.v = nn.Linear(hidden, 1, bias=False)  # additive only
            self.combine = nn.Linear(2 * hidden, embed, bias=False)
            self.out = nn.Linear(embed, tgt_vocab)
            self.out.weight = self.tgt_embed.weight  # tied
            self.drop = nn.Dropout(o.dropout)

        def encode(self, src, src_lengths):
            emb = self.drop(self.src_embed(src))  # (S, B, E)
            packed = pack_padded_sequence(emb, src_lengths.cpu(), enforce_sorted=False)
            out, (h, c) = self.encoder(packed)
            memory, _ = pad_packed_sequence(out)  # (S, B, H)
            states = []
            for layer in range(layers):  # (2L, B, H/2): forward and backward per layer
                hl = torch.cat([h[2 * layer], h[2 * layer + 1]], dim=-1)  # (B, H)
                cl = torch.cat([c[2 * layer], c[2 * layer + 1]], dim=-1)
                bh, bc = self.bridge[2 * layer], self.bridge[2 * layer + 1]
                states.append((torch.tanh(bh(hl)), torch.tanh(bc(cl))))
            return memory, self.keys(memory), states

        def attend(self, h, memory, keys, mask):
            if additive:
                scores = self.v(torch.tanh(keys + self.query(h))).squeeze(-1).T  # (B, S)
            else:
                scores = torch.einsum("bh,sbh->bs", h, keys)
            weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)  # (B, S)
            return torch.einsum("bs,sbh->bh", weights, memory)

        def forward(self, src, src_lengths, tgt_in):
            memory, keys, states = self.encode(src, src_lengths)
            mask = (src[: memory.shape[0]] != 0).T  # (B, S)
            feed = memory.new_zeros(src.shape[1], embed)
            logits = []
            for t in range(tgt_in.shape[0]):  # teacher forcing: the gold previous token
                x = torch.cat([self.drop(self.tgt_embed(tgt_in[t])), feed], dim=-1)
                for depth, cell in enumerate(self.decoder):
                    x = self.drop(x) if depth > 0 else x
                    states[depth] = cell(x, states[depth])
                    x = states[depth][0]
                context = self.attend(x, memory, keys, mask)
                feed = torch.tanh(self.combine(torch.cat([x, context], dim=-1)))
                logits.append(self.out(self.drop(feed)))  # (B, V)
            return torch.stack(logits)  # (T, B, V)

    return Seq2Seq(len(task.src_text), len(task.tgt_text))


def build_reference(batches: int, experiment: str) -> dict:
    import torch
    from torch import nn

    parts = build_parts(batches, experiment)
    task = parts.task
    torch.manual_seed(0)
    model = reference_model(parts).to(DEVICE)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)

    def epoch(number: int) -> tuple[float, float, float]:
        model.train()
        total, tokens, start = 0.0, 0, time.perf_counter()
        for batch in task.train_batches(epoch=number + 1):
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
            tokens += batch.tokens
        seconds = time.perf_counter() - start
        return tokens / seconds, seconds, total / tokens

    return {"ran": "fp32 (textbook loop)", "epoch": epoch}


def build_rnnlab(batches: int, experiment: str, precision: str) -> dict:
    from dataclasses import replace

    import torch

    from rnnlab.train.allocator import tune_malloc
    from rnnlab.train.loop import Fit, Progress
    from rnnlab.train.optim import make_optimizer
    from rnnlab.train.recorder import MemoryRecorder
    from rnnlab.train.signals import StopRequest

    tune_malloc()  # as train_model does
    parts = build_parts(batches, experiment, precision)
    torch.manual_seed(0)
    model = parts.task.build_model(stack=parts.stack).to(parts.device)
    optimizer, impl = make_optimizer(parts.optimizer, model.parameters(), parts.device)
    settings = replace(parts.trainer, eval_every=10**6)
    loop = Fit(model, parts.task, optimizer, None, settings, MemoryRecorder())

    def epoch(number: int) -> tuple[float, float, float]:
        progress = Progress(epoch=number + 1)
        start = time.perf_counter()
        with StopRequest() as stop:
            loss, _ = loop.train_epoch(progress, stop)  # (mean loss, tokens)
        return progress.weight / progress.seconds, time.perf_counter() - start, loss

    ran = f"{loop.precision}, optimizer {impl}"
    handlers = {"ran": ran, "epoch": epoch}
    handlers["val_ppl"] = lambda _: val_ppl(parts.task, model)
    handlers["decode"] = lambda sentences: decoding_speed(parts.task, model, sentences)
    return handlers


def val_ppl(task, model) -> float:
    """Teacher-forced validation perplexity (fp32 evaluation, as rnnlab evaluates)."""
    import math

    import torch

    from rnnlab.data.buckets import sorted_batches

    data, total, tokens = task.split("val"), 0.0, 0
    model.eval()
    with torch.no_grad():
        for idx in sorted_batches([len(s) for s in data.src_ids], batch_size=128):
            batch = task.make_batch([data.src_ids[i] for i in idx], [data.tgt_ids[i] for i in idx])
            total += task.loss_sum(model, batch, smoothing=0.0, tf=1.0).item()
            tokens += batch.tokens
    model.train()
    return math.exp(total / tokens)


def decoding_speed(task, model, sentences: int) -> dict[str, float]:
    """Sentences/s decoding the first ``sentences`` test sentences, greedy and beam 5."""
    import torch

    src = task.split("test").src_ids[:sentences]
    model.eval()
    found = {}
    with torch.no_grad():
        task.decode(model, src[:64], beam_size=5)  # warm-up (cuDNN, allocator)
        for name, beam in (("greedy", 1), ("beam 5", 5)):
            start = time.perf_counter()
            task.decode(model, src, beam_size=beam)
            found[name] = len(src) / (time.perf_counter() - start)
    model.train()
    return found


def worker(side: str, job: dict, conn) -> None:
    import torch

    if job["threads"] is not None:
        torch.set_num_threads(job["threads"])
    batches, experiment = job["batches"], job["experiment"]
    if side == "reference":
        serve(lambda: build_reference(batches, experiment), conn)
    else:
        precision = "fp32" if side == "rnnlab fp32" else "auto"
        serve(lambda: build_rnnlab(batches, experiment, precision), conn)


def parse() -> argparse.Namespace:
    cuda = DEVICE.startswith("cuda")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=100 if cuda else 40)
    parser.add_argument("--rounds", type=int, default=5 if cuda else 4, help="after a warm-up")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per side")
    parser.add_argument("--quick", action="store_true", help="8 batches, 2 rounds")
    parser.add_argument("--decode", type=int, default=1000, help="test sentences to decode")
    parser.add_argument(
        "--check", action="store_true", help="the fp32 check side even where auto is fp32"
    )
    parser.add_argument(
        "--experiment", default="multi30k_gpu" if cuda else "multi30k_cpu", help="the preset"
    )
    args = parser.parse_args()
    if args.quick:
        args.batches, args.rounds, args.decode = 8, 2, min(args.decode, 200)
    return args


def run(args, auto: str) -> float:
    """The rounds, the precision check and decoding; rnnlab's ratio that counts."""
    checked = auto != "fp32" or args.check
    sides = ("reference", "rnnlab") + (("rnnlab fp32",) if checked else ())
    job = {"batches": args.batches, "experiment": args.experiment, "threads": args.threads}
    workers = Workers(worker, sides, job)
    try:
        got = rotating_rounds(sides, args.rounds, lambda s, n: workers.ask(s, "epoch", n))
        counts = True
        if "rnnlab fp32" in sides:
            fp32, low = (workers.ask(s, "val_ppl") for s in ("rnnlab fp32", "rnnlab"))
            steps = f"the same {(args.rounds + 1) * args.batches} steps"
            counts = precision_counts(fp32, low, low_name=auto, where=steps)
        speed = workers.ask("rnnlab", "decode", args.decode)
    finally:
        workers.close()
    ratios = {
        s: [a[0] / b[0] for a, b in zip(got[s], got["reference"], strict=True)] for s in sides
    }
    for side in sides:
        rate, loss = statistics.median(a[0] for a in got[side]), got[side][-1][2]
        print(
            f"{side:12s}: {rate:8.0f} target tok/s (median), {statistics.median(ratios[side]):.2f}x, "
            f"train loss after {args.rounds + 1} epochs {loss:.3f} (ran: {workers.ran[side]})"
        )
    print(
        f"rnnlab decoding, {args.decode} test sentences: greedy {speed['greedy']:.0f} "
        f"sentences/s, beam 5 {speed['beam 5']:.0f} sentences/s"
    )
    return statistics.median(ratios["rnnlab" if counts else "rnnlab fp32"])


def main() -> int:
    args = parse()
    if "RNNLAB_DATA" not in os.environ and (ROOT.parent / "shared" / "datasets").is_dir():
        os.environ["RNNLAB_DATA"] = str(ROOT.parent / "shared" / "datasets")
    import torch

    from rnnlab.train.precision import resolve_precision, workload

    parts = build_parts(1, args.experiment)
    model = parts.task.build_model(stack=parts.stack)
    auto, why = resolve_precision("auto", torch.device(DEVICE), workload(parts.task, model))
    print(f"trainer.precision=auto picks {auto} here ({why}); {cuda_versions()}", flush=True)
    print(
        f"Multi30k de->en training throughput, {DEVICE} ({args.threads or torch.get_num_threads()} "
        f"CPU threads): {args.experiment}, {args.batches} batches per epoch, {args.rounds} timed "
        "rounds after a warm-up, one process per side",
        flush=True,
    )
    try:
        ratio = run(args, auto)
    except RuntimeError as exc:
        print(f"bench_translate: {exc}", file=sys.stderr)
        return 2
    print(
        f"RATIO translate_train{'' if DEVICE == 'cpu' else '_' + DEVICE.split(':')[0]}={ratio:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
