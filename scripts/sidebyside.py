"""What the side-by-side benchmarks share: composing rnnlab's config, one worker process per
side (so no process-wide state, allocator, thread pool or CUDA context, leaks between
sides), and the epoch-1 quality check that decides whether a lower precision's speed counts.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
from collections.abc import Callable

#: a lower precision counts only within this relative distance of fp32's validation ppl
PPL_TOLERANCE = 0.02


def compose(overrides: list[str]):
    """The composed ``train`` config, as ``rnnlab train`` composes it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from rnnlab.paths import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


def serve(build: Callable[[], dict[str, Callable]], conn) -> None:
    """A worker's loop: build the side (a dict of request name -> function, plus ``ran``, a
    string saying what it runs), then answer ``(request, argument)`` until ``stop``."""
    try:
        handlers = build()
        conn.send(("ready", handlers.pop("ran")))
        while (ask := conn.recv()) != "stop":
            name, argument = ask
            conn.send(("answer", handlers[name](argument)))
    except Exception as exc:  # the parent prints it and stops every worker
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


class Workers:
    """One process per side, each running ``target(side, job, conn)`` (which calls
    :func:`serve`); ``ask`` sends a request and returns the answer."""

    def __init__(self, target: Callable, sides: tuple[str, ...], job: dict) -> None:
        ctx = mp.get_context("spawn")
        self.pipes, self.procs = {}, []
        for side in sides:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=target, args=(side, job, child), daemon=True)
            proc.start()
            self.pipes[side] = parent
            self.procs.append(proc)
        self.ran = {side: self.receive(side) for side in sides}

    def receive(self, side: str):
        kind, value = self.pipes[side].recv()
        if kind == "error":
            raise RuntimeError(f"{side}: {value}")
        return value

    def ask(self, side: str, request: str, argument=None):
        self.pipes[side].send((request, argument))
        return self.receive(side)

    def close(self) -> None:
        for pipe in self.pipes.values():
            with contextlib.suppress(OSError):  # a worker that failed has gone already
                pipe.send("stop")
        for proc in self.procs:
            proc.join(timeout=30)


def rotating_rounds(
    sides: tuple[str, ...], rounds: int, ask: Callable[[str, int], tuple]
) -> dict[str, list[tuple]]:
    """A warm-up round then ``rounds`` timed ones, rotating which side goes first; each
    answer is ``(rate, seconds, ...)``; the warm-up is printed apart (with its seconds) and
    left out of what is returned."""
    got: dict[str, list[tuple]] = {side: [] for side in sides}
    for round_no in range(rounds + 1):
        shift = round_no % len(sides)
        order = sides[shift:] + sides[:shift]
        answers = {side: ask(side, round_no) for side in order}
        base = answers[sides[0]][0]
        cells = [f"{s} {answers[s][0]:8.0f} ({answers[s][0] / base:.2f}x)" for s in sides]
        if round_no == 0:
            secs = ", ".join(f"{s} {answers[s][1]:.1f} s" for s in sides)
            print(f"  warm-up  {'   '.join(cells)}\n           (warm-up seconds: {secs})")
            continue
        print(f"  round {round_no}  " + "   ".join(cells), flush=True)
        for side in sides:
            got[side].append(answers[side])
    return got


def precision_counts(fp32: float, low: float, *, low_name: str, where: str) -> bool:
    """Print the epoch-1 (or same-steps) validation ppl of both precisions; whether the
    lower one is within :data:`PPL_TOLERANCE` of fp32's."""
    gap = low / fp32 - 1.0
    counts = abs(gap) <= PPL_TOLERANCE
    print(
        f"  validation ppl after {where}: fp32 {fp32:.2f}, {low_name} {low:.2f} ({gap:+.1%}): "
        f"{low_name} {'counts' if counts else 'does NOT count (> 2 %)'}",
        flush=True,
    )
    return counts


def cuda_versions() -> str:
    """torch, CUDA, cuDNN and the card, for the header of a CUDA run."""
    import torch

    if not torch.cuda.is_available():
        return f"torch {torch.__version__} (no CUDA)"
    name = torch.cuda.get_device_name(0)
    cc = ".".join(map(str, torch.cuda.get_device_capability(0)))
    return (
        f"{name} (compute capability {cc}), torch {torch.__version__}, CUDA "
        f"{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
    )
