"""Language models at equal quality: rnnlab's adaptive softmax against the textbook loop.

Each comparison trains its sides in worker processes of their own (one at a time, in turn,
so a busy machine slows them alike), on the same token streams, all on the CPU:

* ``textbook``: the loop of ``ptb_reference.py`` (fused ``nn.LSTM`` 2x200, full softmax,
  fp32, batch 20, bptt 35, SGD at lr 20, clip 0.25), the same one ``bench_ptb.py`` times;
* ``rnnlab adaptive``: ``rnnlab train``'s own step (``rnnlab.train.loop.Fit.train_step``)
  on the task and model the preset composes: ``experiment=ptb_small_adaptive`` on PTB, and
  ``task.softmax=adaptive task.tie_weights=true`` (adaptive input) on the large vocabularies;
* ``rnnlab full``: the same preset with the full softmax, to tell what the adaptive softmax
  gives from what rnnlab's recipe gives, and to compare the two softmaxes' perplexity.

Time to quality: the textbook trains one epoch (time T, validation perplexity P); each rnnlab
side then trains, evaluating the validation split every 1/40 epoch, until its validation
perplexity is at most P; t is its training time (evaluations excluded) when it got there,
and the ratio is T / t, as measured (``RATIO lm_ptb_adaptive``: the issue's definition; on
an idle machine). A side that is not there when its time passes 2T stops ("not reached").
Then every side trains to ``--epochs`` epochs for the perplexity after equal epochs.

For a busy machine, ``..._load_free`` ratios: (the textbook's epoch tokens / the side's
tokens to P) x (its tokens/s over the textbook's, in short rotating rounds side by side).
Short rounds undercount a fast side (idle, PTB: the adaptive side ran 1.77x the textbook in
4-second rounds and 2.01x over whole epochs; its step takes a few hundred steps to reach its
speed after another side ran), so on an idle machine the as-measured ratio is the figure.

Parts (``--parts``): ``ptb`` (needs the corpus: ``rnnlab data fetch ptb`` or $RNNLAB_DATA);
``vocab50k`` and ``vocab250k``: a generated Zipf corpus (``zipf_corpus.py``, under a temp
folder) with that many word types, for speed; ``real``: a real corpus with its whole
vocabulary (the German side of Multi30k, whitespace words), full against adaptive softmax
after equal epochs; ``rss``: the peak resident memory of a process that tokenises a generated
corpus of ``--rss-tokens`` tokens with 250k types and trains 20 steps of the adaptive model
on it (memory-mapped ids).

    python scripts/bench_lm_vocab.py [--quick] [--parts ptb,vocab50k,...] [--epochs 2]

Ends with ``RATIO lm_ptb_adaptive=`` (time-to-quality ratio, goal >= 2.5; and ``_load_free``),
``RATIO lm_vocab50k=``, ``RATIO lm_vocab250k=`` and ``RATIO lm_adaptive_ppl_over_full=``.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

#: evaluations of the validation split per epoch while a side has not reached the target; the
#: tokens to the target are known to 1/40 epoch (evaluations are not counted as training time)
EVALS_PER_EPOCH = 40


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_features() -> str:
    """The CPU and whether it has AMX and AVX512-BF16 (what trainer.precision=auto reads)."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (ln.split(":", 1)[1].strip() for ln in text.splitlines() if "model name" in ln), "?"
    )
    flags = set(
        next(
            (ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []
        )
    )
    amx = "amx_bf16" in flags or "amx_tile" in flags
    features = (
        "AMX"
        if amx
        else ("AVX512-BF16, no AMX" if "avx512_bf16" in flags else "neither AMX nor AVX512-BF16")
    )
    return f"{model}, {os.cpu_count()} cores: {features}"


def compose(overrides: list[str]):
    from bench_ptb import compose as hydra_compose

    return hydra_compose(overrides)


class RnnlabSide:
    """A composed task and model trained by rnnlab's own step, epoch by epoch."""

    def __init__(self, overrides: list[str]) -> None:
        import torch

        from rnnlab.compose import compose as build
        from rnnlab.train.allocator import tune_malloc
        from rnnlab.train.device import seed_everything
        from rnnlab.train.loop import Fit, Progress
        from rnnlab.train.recorder import MemoryRecorder

        tune_malloc()  # as train_model does
        cfg = compose([*overrides, "trainer.progress=false", "device=cpu"])
        parts = build(cfg)
        seed_everything(parts.seed)
        self.task = parts.task.to(torch.device("cpu"))
        self.task.prepare()
        model = self.task.build_model(stack=parts.stack)
        optimizer = parts.optimizer(model.parameters())
        scheduler = parts.scheduler(optimizer) if parts.scheduler is not None else None
        self.loop = Fit(model, self.task, optimizer, scheduler, parts.trainer, MemoryRecorder())
        self.progress = Progress()
        self.elapsed = 0.0  # training seconds so far, evaluations excluded
        self.tokens = 0  # training tokens so far
        self.tags = self.task.tags()

    def val_ppl(self) -> float:
        self.loop.model.eval()
        ppl = self.task.evaluate(self.loop.model, "val").metrics["val/ppl"]
        self.loop.model.train()
        return ppl

    def epoch(self, target: float | None, budget: float) -> dict:
        """One epoch; while ``target`` is set and not reached, the validation perplexity
        every 1/10 epoch. Stops early once past ``budget`` seconds without reaching it."""

        from rnnlab.data.bptt import num_windows
        from rnnlab.train.loop import step_scheduler
        from rnnlab.train.signals import StopRequest

        p, loop, task = self.progress, self.loop, self.task
        p.batches_done = 0
        carry = loop.start_epoch(p)
        every = max(1, num_windows(task.split_streams("train"), task.bptt) // EVALS_PER_EPOCH)
        reached, reached_tokens, seconds, tokens = None, None, 0.0, 0
        with StopRequest() as stop:
            for index, batch in enumerate(task.train_batches(epoch=p.epoch)):
                start = time.perf_counter()
                carry = loop.train_step(p, batch, carry, stop)
                seconds += time.perf_counter() - start
                tokens += batch[1].numel()
                if target is not None and reached is None and (index + 1) % every == 0:
                    if self.val_ppl() <= target:
                        reached = self.elapsed + seconds
                        reached_tokens = self.tokens + tokens
                    elif self.elapsed + seconds > budget:
                        break
        self.elapsed += seconds
        self.tokens += tokens
        ppl = self.val_ppl()
        if loop.scheduler is not None:
            step_scheduler(loop.scheduler, ppl)
        p.epoch += 1
        if target is not None and reached is None and ppl <= target:
            reached, reached_tokens = self.elapsed, self.tokens
        return {
            **{"seconds": seconds, "tokens": tokens, "ppl": ppl},
            **{"reached": reached, "reached_tokens": reached_tokens},
        }

    def steps(self, count: int) -> dict:
        """Training steps from the start of an epoch, until ``count`` tokens are done; their
        tokens/s."""

        from rnnlab.train.signals import StopRequest

        p, loop = self.progress, self.loop
        p.batches_done = 0
        carry = loop.start_epoch(p)
        start, tokens = time.perf_counter(), 0
        with StopRequest() as stop:
            for batch in self.task.train_batches(epoch=p.epoch):
                if tokens >= count:
                    break
                carry = loop.train_step(p, batch, carry, stop)
                tokens += batch[1].numel()
        return {"tokens_per_s": tokens / (time.perf_counter() - start)}


class TextbookSide:
    """ptb_reference.py's loop on the streams of the same rnnlab task."""

    def __init__(self, overrides: list[str]) -> None:
        import torch
        from ptb_reference import ReferenceLM

        from rnnlab.compose import compose as build

        task = build(compose([*overrides, "device=cpu"])).task
        self.train_data = task.split_streams("train").long().contiguous()  # (T, 20)
        self.val_data = task.split_streams("val").long().contiguous()  # (T, 10)
        torch.manual_seed(0)
        self.model = ReferenceLM(len(task.get_vocab()))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=20.0)
        self.elapsed = 0.0
        self.tags: dict[str, str] = {}

    def epoch(self, target: float | None, budget: float) -> dict:
        import math

        from ptb_reference import evaluate, train_epoch

        _, tokens, seconds = train_epoch(self.model, self.optimizer, self.train_data, bptt=35)
        self.elapsed += seconds
        ppl = math.exp(min(evaluate(self.model, self.val_data, bptt=35), 700.0))
        return {"seconds": seconds, "tokens": tokens, "ppl": ppl, "reached": None}

    def steps(self, count: int) -> dict:
        """The same loop on the first windows that hold ``count`` tokens: their tokens/s."""
        from ptb_reference import train_epoch

        windows = max(1, -(-count // (35 * self.train_data.size(1))))  # ceil
        window = self.train_data[: windows * 35 + 1]  # (windows·35 + 1, 20)
        _, tokens, seconds = train_epoch(self.model, self.optimizer, window, bptt=35)
        return {"tokens_per_s": tokens / seconds}


def worker(kind: str, overrides: list[str], env: dict[str, str], conn) -> None:
    """Build one side, then train one epoch per request; each answer carries the peak RSS."""
    os.environ.update(env)
    if env.get("BENCH_THREADS"):
        import torch

        torch.set_num_threads(int(env["BENCH_THREADS"]))
    try:
        side = TextbookSide(overrides) if kind == "textbook" else RnnlabSide(overrides)
        conn.send(("ready", {"tags": side.tags, "rss_mb": peak_rss_mb()}))
        while (request := conn.recv()) != "stop":
            what, *args = request
            result = side.epoch(*args) if what == "epoch" else side.steps(*args)
            conn.send((what, {**result, "rss_mb": peak_rss_mb()}))
    except Exception as exc:  # the parent prints it and stops
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


class Sides:
    """Worker processes, one per side, asked in turn."""

    def __init__(self, sides: dict[str, tuple[str, list[str]]], env: dict[str, str]) -> None:
        ctx = mp.get_context("spawn")
        self.pipes, self.procs, self.info = {}, [], {}
        for name, (kind, overrides) in sides.items():
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker, args=(kind, overrides, env, child), daemon=True)
            proc.start()
            self.pipes[name], self.procs = parent, [*self.procs, proc]
        for name in sides:
            self.info[name] = self.answer(name)

    def answer(self, name: str) -> dict:
        kind, value = self.pipes[name].recv()
        if kind == "error":
            raise RuntimeError(f"{name}: {value}")
        return value

    def epoch(self, name: str, target: float | None = None, budget: float = 0.0) -> dict:
        self.pipes[name].send(("epoch", target, budget))
        return self.answer(name)

    def steps(self, name: str, count: int) -> dict:
        self.pipes[name].send(("steps", count))
        return self.answer(name)

    def close(self) -> None:
        for pipe in self.pipes.values():
            with contextlib.suppress(OSError):
                pipe.send("stop")
        for proc in self.procs:
            proc.join(timeout=10)


def race(
    title: str,
    spec: dict[str, tuple[str, list[str]]],
    env: dict,
    epochs: int,
    *,
    round_tokens: int = 40_000,
    rounds: int = 5,
) -> dict:
    """Time to the textbook's epoch-1 perplexity, then every side to ``epochs`` epochs.
    Returns each side's epochs and the time-to-quality ratios."""
    print(f"\n== {title}", flush=True)
    sides = Sides(spec, env)
    runs: dict[str, list[dict]] = {name: [] for name in spec}
    ratios: dict[str, float | None] = {}
    load_free: dict[str, float | None] = {}
    try:
        for name, info in sides.info.items():
            tags = info["tags"]
            cut = (
                f", cutoffs {tags['cutoffs']} ({tags['cutoffs_reason']})"
                if "cutoffs" in tags
                else ""
            )
            print(f"  {name}: built, peak RSS {info['rss_mb']:.0f} MB{cut}", flush=True)
        if "textbook" in spec:
            first = sides.epoch("textbook")
            runs["textbook"].append(first)
            limit, target = first["seconds"], first["ppl"]
            print(
                f"  textbook: epoch 1 in {limit:.1f} s ({first['tokens'] / limit:,.0f} tok/s), "
                f"val ppl {target:.2f}",
                flush=True,
            )
            for name in (n for n in spec if n != "textbook"):
                ratios[name] = chase(
                    sides, name, runs[name], target=target, limit=limit, epochs=epochs
                )
        for epoch in range(1, epochs + 1):
            for name in spec:
                if len(runs[name]) < epoch:
                    runs[name].append(sides.epoch(name))
        if "textbook" in spec:
            load_free = robust(runs, ratios, speed_rounds(sides, list(spec), round_tokens, rounds))
    finally:
        sides.close()
    report_epochs(runs, epochs)
    return {"runs": runs, "ratios": ratios, "load_free": load_free}


def speed_rounds(sides: Sides, names: list[str], tokens: int, rounds: int) -> dict[str, float]:
    """Each side's tokens/s over the textbook's: about ``tokens`` training tokens per side per
    round (the same work for every side, whatever its bptt: a round of a few windows timed
    mostly the start of an epoch), in rotating order, the median of the per-round ratios (a
    busy machine slows all sides of a round alike)."""
    import statistics

    per_round: dict[str, list[float]] = {name: [] for name in names}
    for round_no in range(rounds):
        order = names[round_no % len(names) :] + names[: round_no % len(names)]
        rate = {name: sides.steps(name, tokens)["tokens_per_s"] for name in order}
        for name in names:
            per_round[name].append(rate[name] / rate["textbook"])
        textbook = f"textbook {rate['textbook']:,.0f} tok/s"
        others = ", ".join(
            f"{n} {rate[n] / rate['textbook']:.2f}x" for n in names if n != "textbook"
        )
        print(f"    round {round_no + 1}: {textbook}; {others}", flush=True)
    speed = {name: statistics.median(r) for name, r in per_round.items()}
    cells = ", ".join(f"{name} {speed[name]:.2f}x" for name in names if name != "textbook")
    print(f"  tokens/s against the textbook, side by side ({rounds} rounds): {cells}", flush=True)
    return speed


def robust(runs: dict, ratios: dict, speed: dict[str, float]) -> dict[str, float | None]:
    """Time-to-quality ratios from load-free quantities: (textbook's epoch tokens / the side's
    tokens to the same perplexity) x (the side's tokens/s / the textbook's, side by side)."""
    out: dict[str, float | None] = {}
    epoch_tokens = runs["textbook"][0]["tokens"]
    for name, wall in ratios.items():
        reached = next((r["reached_tokens"] for r in runs[name] if r["reached_tokens"]), None)
        if reached is None:
            out[name] = None
            continue
        out[name] = epoch_tokens / reached * speed[name]
        print(
            f"  {name}: {reached:,} tokens to the textbook's epoch-1 ppl "
            f"(textbook: {epoch_tokens:,}) x {speed[name]:.2f} tokens/s = {out[name]:.2f}x "
            f"(wall-time ratio as measured, one after the other: "
            f"{f'{wall:.2f}x' if wall else 'not reached'})",
            flush=True,
        )
    return out


def chase(sides: Sides, name: str, done: list[dict], *, target: float, limit: float, epochs: int):
    """Train ``name`` until its validation perplexity is at most ``target`` (at most twice the
    textbook's ``limit`` seconds); the ratio limit / time, or None when not reached."""
    elapsed = 0.0
    while elapsed <= 2 * limit and len(done) < max(epochs, 3):
        result = sides.epoch(name, target, 2 * limit)
        done.append(result)
        elapsed += result["seconds"]
        rate = result["tokens"] / result["seconds"]
        if result["reached"] is not None:
            ratio = limit / result["reached"]
            print(
                f"  {name}: reached ppl {target:.2f} after {result['reached']:.1f} s of training "
                f"(epoch {len(done)}; {rate:,.0f} tok/s): {ratio:.2f}x the textbook",
                flush=True,
            )
            return ratio
    print(f"  {name}: did not reach ppl {target:.2f} within {2 * limit:.0f} s", flush=True)
    return None


def report_epochs(runs: dict[str, list[dict]], epochs: int) -> None:
    for name, done in runs.items():
        if not done:
            continue
        seconds = sum(r["seconds"] for r in done[:epochs])
        tokens = sum(r["tokens"] for r in done[:epochs])
        ppls = ", ".join(f"{r['ppl']:.2f}" for r in done[:epochs])
        print(
            f"  {name:16s}: val ppl by epoch {ppls}; {tokens / seconds:,.0f} tok/s; "
            f"peak RSS {done[-1]['rss_mb']:.0f} MB",
            flush=True,
        )


def final_ppl(result: dict, name: str, epochs: int) -> float:
    return result["runs"][name][epochs - 1]["ppl"]


def multi30k_german(folder: Path) -> Path | None:
    """train/valid/test.txt of Multi30k's German side (raw lines), or None without it."""
    data = Path(os.environ.get("RNNLAB_DATA", ROOT.parent / "shared" / "datasets")) / "multi30k"
    names = {
        "train.txt": "train.de.gz",
        "valid.txt": "val.de.gz",
        "test.txt": "test_2016_flickr.de.gz",
    }
    if not all((data / gz).is_file() for gz in names.values()):
        return None
    folder.mkdir(parents=True, exist_ok=True)
    for name, gz in names.items():
        with gzip.open(data / gz, "rt", encoding="utf-8") as src:
            (folder / name).write_text(src.read(), encoding="utf-8")
    return folder


def measure_rss(tokens: int, tmp: Path, env: dict) -> float:
    """Peak RSS of a process that tokenises a generated corpus of ``tokens`` tokens over 250k
    types (cache in ``tmp``) and trains 20 steps of the tied adaptive model on all of it."""
    from zipf_corpus import write_splits

    print(f"\n== peak RSS: {tokens:,} generated tokens, 250,000 types", flush=True)
    start = time.perf_counter()
    corpus = write_splits(tmp / "rss", tokens=tokens, types=250_000, heldout=tokens // 100)
    size = (corpus / "train.txt").stat().st_size / 1e6
    print(f"  generated {size:,.0f} MB of text in {time.perf_counter() - start:.0f} s", flush=True)
    overrides = ["task=lm", f"task.corpus={corpus}", *ADAPTIVE_INPUT]
    start = time.perf_counter()
    sides = Sides({"rnnlab adaptive": ("rnnlab", overrides)}, env)
    try:
        built = time.perf_counter() - start
        info = sides.info["rnnlab adaptive"]
        result = sides.steps("rnnlab adaptive", 20 * 400)  # 20 windows of 20 x 20
    finally:
        sides.close()
    print(
        f"  tokenised and built in {built:.0f} s (peak RSS {info['rss_mb']:.0f} MB), 20 steps "
        f"at {result['tokens_per_s']:,.0f} tok/s: peak RSS {result['rss_mb']:.0f} MB "
        f"(goal <= 1536)",
        flush=True,
    )
    return result["rss_mb"]


ADAPTIVE_INPUT = ["task.softmax=adaptive", "task.tie_weights=true"]
SIZES = {  # part: (training tokens, held-out tokens), full and --quick
    "vocab50k": ((200_000, 10_000), (5_000, 1_000)),
    "vocab250k": ((30_000, 3_000), (2_000, 500)),
}


def part_ptb(args, env: dict) -> dict[str, float]:
    slice_ = args.ptb_tokens or (20_000 if args.quick else None)
    tokens = [f"task.max_tokens={slice_}"] if slice_ else []
    spec = {
        "textbook": ("textbook", ["experiment=ptb_small", *tokens]),
        "rnnlab adaptive": ("rnnlab", ["experiment=ptb_small_adaptive", *tokens]),
        "rnnlab full": ("rnnlab", ["experiment=ptb_small", *tokens]),
    }
    rounds, round_tokens = (1, 8_000) if args.quick else (5, 40_000)
    result = race(
        "PTB, 2x200 LSTM, 10k words",
        spec,
        env,
        args.epochs,
        round_tokens=round_tokens,
        rounds=rounds,
    )
    out = {}
    for name, key in (("rnnlab adaptive", "lm_ptb_adaptive"), ("rnnlab full", "lm_ptb_full")):
        out[key] = result["ratios"].get(name)
        out[f"{key}_load_free"] = result["load_free"].get(name)
    adaptive, full = (final_ppl(result, n, args.epochs) for n in ("rnnlab adaptive", "rnnlab full"))
    print(
        f"  after {args.epochs} epoch(s): adaptive / full val ppl = {adaptive / full:.4f} "
        "(goal <= 1.03)",
        flush=True,
    )
    out["lm_ptb_adaptive_ppl_over_full"] = adaptive / full
    return out


def part_vocab(name: str, types: int, args, env: dict, tmp: Path) -> dict[str, float]:
    from zipf_corpus import write_splits

    tokens, heldout = SIZES[name][1 if args.quick else 0]
    corpus = write_splits(tmp / name, tokens=tokens, types=types, heldout=heldout)
    lm = ["task=lm", f"task.corpus={corpus}", f"task.max_tokens={tokens}"]
    spec = {
        "textbook": ("textbook", lm),
        "rnnlab adaptive": ("rnnlab", [*lm, *ADAPTIVE_INPUT]),
    }
    title = f"generated Zipf corpus, {types:,} types, {tokens:,} training tokens"
    # 250k full softmax: ~1 s a 700-token window idle
    round_tokens = 2_100 if args.quick or types > 100_000 else 14_000
    result = race(title, spec, env, 1, round_tokens=round_tokens, rounds=1 if args.quick else 3)
    ratio, load_free = (result[k].get("rnnlab adaptive") for k in ("ratios", "load_free"))
    return {f"lm_{name}": ratio, f"lm_{name}_load_free": load_free}


def part_real(args, env: dict, tmp: Path) -> dict[str, float]:
    corpus = multi30k_german(tmp / "multi30k-de")
    if corpus is None:
        print("\n== real corpus: Multi30k not found ($RNNLAB_DATA/multi30k); skipped")
        return {}
    lm = ["task=lm", f"task.corpus={corpus}", "task.vocab_size=null"]
    lm += ["task.max_tokens=20000"] if args.quick else []
    spec = {
        "rnnlab full": ("rnnlab", lm),
        "rnnlab adaptive": ("rnnlab", [*lm, "task.softmax=adaptive"]),
        "rnnlab adaptive+input": ("rnnlab", [*lm, *ADAPTIVE_INPUT]),
    }
    result = race("Multi30k German, its whole vocabulary, full vs adaptive", spec, env, args.epochs)
    full = final_ppl(result, "rnnlab full", args.epochs)
    out = {}
    for name, key in (("rnnlab adaptive", ""), ("rnnlab adaptive+input", "_tied")):
        ratio = final_ppl(result, name, args.epochs) / full
        print(f"  {name} / full val ppl after {args.epochs} epoch(s): {ratio:.4f}", flush=True)
        out[f"lm_real_adaptive{key}_ppl_over_full"] = ratio
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small slices, 1 epoch")
    parser.add_argument("--parts", default="ptb,vocab50k,vocab250k,real,rss")
    parser.add_argument("--epochs", type=int, default=2, help="epochs for equal-epoch ppl")
    parser.add_argument("--rss-tokens", type=int, default=100_000_000)
    parser.add_argument("--ptb-tokens", type=int, help="PTB: the first N tokens of each split")
    parser.add_argument(
        "--threads", type=int, help="torch threads per side (default: torch's; 1 on a busy CPU)"
    )
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.rss_tokens = 1, 1_000_000
    if "RNNLAB_DATA" not in os.environ and (ROOT.parent / "shared" / "datasets").is_dir():
        os.environ["RNNLAB_DATA"] = str(ROOT.parent / "shared" / "datasets")
    parts = args.parts.split(",")
    threads = args.threads or "torch's default"
    print(f"CPU: {cpu_features()}; threads per side: {threads}", flush=True)
    print(f"load average at the start: {os.getloadavg()[0]:.1f}", flush=True)
    ratios: dict[str, float | None] = {}
    with tempfile.TemporaryDirectory(prefix="rnnlab-bench-vocab-") as folder:
        tmp = Path(folder)
        threads = {"BENCH_THREADS": str(args.threads)} if args.threads else {}
        # generated corpora's ids die with tmp; PTB's go to the user's cache, as every PTB run's
        env = {"RNNLAB_CACHE": str(tmp / "cache"), **threads}
        ptb_env = threads
        try:
            if "ptb" in parts:
                ratios |= part_ptb(args, ptb_env)
            for name, types in (("vocab50k", 50_000), ("vocab250k", 250_000)):
                if name in parts:
                    ratios |= part_vocab(name, types, args, env, tmp)
            if "real" in parts:
                ratios |= part_real(args, env, tmp)
            if "rss" in parts:
                ratios["lm_rss_mb_250k_types"] = measure_rss(args.rss_tokens, tmp, env)
        except RuntimeError as exc:
            print(f"bench_lm_vocab: {exc}", file=sys.stderr)
            return 2
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    for key, value in ratios.items():
        print(f"RATIO {key}={value:.2f}" if value is not None else f"RATIO {key}=not-reached")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
