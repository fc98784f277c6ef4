"""A training step never waits for the device: the host reads nothing back from it except on
sampled steps (``trainer.log_every``) and once at the end of an epoch (rnnlab.train.loop).

On the CPU, :class:`SyncCounter` counts every operation that makes a CUDA host wait for the
GPU (reading a value: ``.item()``, ``float()``, ``bool()``, ``int()``; ``.tolist()``,
``.numpy()``, ``.cpu()``; and the operations whose output size the device must report:
``nonzero``, boolean-mask selection, ``unique``, ...), over a few hundred real training steps
of each task, and the test asserts exactly one read on each sampled step and one at each
epoch's end. Two things run uncounted, by design: building a batch on the host (the task's
batch iterator; on CUDA its copies to the device are queued from pinned memory, which the
``gpu`` test checks) and torch's optimizer ``step`` (its step counter lives on the host, or on
the device when fused, and is read there). On CUDA, ``test_no_step_syncs_on_cuda`` runs the
same steps under ``torch.cuda.set_sync_debug_mode("error")``, which raises at any real wait.
"""

from __future__ import annotations

import contextlib
import random
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import compose
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

#: aten operations that make a CUDA host wait: a value read back, or an output whose size
#: only the device knows
SYNCING = {
    aten._local_scalar_dense.default,  # .item(), float(), int(), bool() of a tensor
    aten.is_nonzero.default,
    aten.equal.default,
    aten.nonzero.default,
    aten.masked_select.default,
    aten._unique.default,
    aten._unique2.default,
    aten.unique_dim.default,
    aten.unique_consecutive.default,
    aten.repeat_interleave.Tensor,
}
#: index operations that wait when the index is a boolean mask (a ``nonzero`` inside)
MASKABLE = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default}
#: Tensor methods that copy to the host without going through an aten operation on the CPU
HOST_COPIES = ("tolist", "numpy", "cpu", "__array__")


def bool_index(args) -> bool:
    """Whether an index operation selects by a boolean mask (a ``nonzero`` inside)."""
    indices = args[1] if len(args) > 1 else ()
    return any(
        isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ()
    )


class SyncCounter(TorchDispatchMode):
    """Records each host wait a CUDA run would make, labelled with :attr:`where`."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[object, str]] = []
        self.where: object = None
        self.paused = 0

    def record(self, what: str) -> None:
        if not self.paused:
            self.events.append((self.where, what))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in SYNCING:
            self.record(str(func))
        elif func in MASKABLE and bool_index(args):
            self.record(f"{func} with a boolean mask")
        return func(*args, **(kwargs or {}))

    @contextlib.contextmanager
    def pause(self):
        self.paused += 1
        try:
            yield
        finally:
            self.paused -= 1

    @contextlib.contextmanager
    def host_copies(self):
        """Count the host-copy methods within the block (patched on ``torch.Tensor`` for the
        block only)."""
        originals = {name: getattr(torch.Tensor, name) for name in HOST_COPIES}
        for name, original in originals.items():

            def wrapper(tensor, *args, _original=original, _name=name, **kwargs):
                self.record(f"Tensor.{_name}")
                return _original(tensor, *args, **kwargs)

            setattr(torch.Tensor, name, wrapper)
        try:
            yield self
        finally:
            for name, original in originals.items():
                setattr(torch.Tensor, name, original)


def paused_batches(counter: SyncCounter, batches, epoch: int):
    """The task's batches, built with the counter paused (host-side work by design)."""
    with counter.pause():
        iterator = iter(batches(epoch=epoch))
    while True:
        with counter.pause():
            try:
                batch = next(iterator)
            except StopIteration:
                return
        yield batch


def instrument(loop, counter: SyncCounter) -> None:
    """Label the counter's events by step; leave the batch iterator and torch's optimizer
    step uncounted (see the module docstring)."""
    step_once, epoch_once = loop.train_step, loop.train_epoch
    batches, optimizer_step = loop.task.train_batches, loop.optimizer.step

    def train_step(p, batch, carry, stop):
        counter.where = p.step + 1
        try:
            return step_once(p, batch, carry, stop)
        finally:
            counter.where = "epoch end"

    def optimizer_step_uncounted(*args, **kwargs):
        with counter.pause():
            return optimizer_step(*args, **kwargs)

    def train_epoch(p, stop):
        counter.paused -= 1  # counted from here
        try:
            with counter:  # the dispatch mode, for the epoch's training only
                return epoch_once(p, stop)
        finally:
            counter.paused += 1

    loop.train_step, loop.train_epoch = train_step, train_epoch
    loop.task.train_batches = lambda *, epoch: paused_batches(counter, batches, epoch)
    loop.optimizer.step = optimizer_step_uncounted


def build_loop(overrides: list[str], device: str):
    """A real ``Fit`` (rnnlab.train.loop) for the composed config, as ``rnnlab train``
    builds it (optimizer: rnnlab.train.optim)."""
    from rnnlab.compose import compose as build
    from rnnlab.train.loop import Fit
    from rnnlab.train.optim import make_optimizer
    from rnnlab.train.recorder import MemoryRecorder

    parts = build(compose([*overrides, f"device={device}", "trainer.progress=false"]))
    task = parts.task.to(parts.device)
    task.prepare()  # the data read and checked before training, as rnnlab train does
    torch.manual_seed(0)
    model = task.build_model(stack=parts.stack).to(parts.device)
    optimizer, _ = make_optimizer(parts.optimizer, model.parameters(), parts.device)
    return Fit(model, task, optimizer, None, parts.trainer, MemoryRecorder())


def train_counted(overrides: list[str]) -> tuple[Counter, object, SyncCounter]:
    """Train the whole run (evaluation uncounted) and count host waits per step label."""
    from rnnlab.train.loop import Progress

    loop = build_loop(overrides, "cpu")
    counter = SyncCounter()
    counter.paused = 1  # counted only within train_epoch
    instrument(loop, counter)
    with counter.host_copies():
        result = loop.run(Progress())
    return Counter(where for where, _ in counter.events), result, counter


def expected(steps: int, epochs: int, log_every: int) -> Counter:
    """One read per sampled step, one per epoch end."""
    return Counter({s: 1 for s in range(log_every, steps + 1, log_every)} | {"epoch end": epochs})


# -- tiny corpora, generated ---------------------------------------------------------------
WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "ran",
    "on",
    "under",
    "mat",
    "log",
    "big",
    "small",
    "red",
    "blue",
]
WÖRTER = [
    "der",
    "die",
    "eine",
    "katze",
    "hund",
    "sass",
    "lief",
    "auf",
    "unter",
    "matte",
    "gross",
    "klein",
    "rot",
    "blau",
]


def write_lm_corpus(folder: Path) -> Path:
    rng = random.Random(0)
    folder.mkdir(parents=True)
    for name, count in (("train.txt", 200), ("valid.txt", 20), ("test.txt", 20)):
        lines = [" ".join(rng.choices(WORDS, k=rng.randint(3, 8))) for _ in range(count)]
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def write_parallel_corpus(folder: Path) -> Path:
    """de -> en pairs of 2-4 words (word i of one side translates word i of the other)."""
    rng = random.Random(0)
    folder.mkdir(parents=True)
    for stem, count in (("train", 100), ("valid", 8), ("test", 8)):
        picks = [rng.choices(range(len(WORDS)), k=rng.randint(2, 4)) for _ in range(count)]
        for lang, words in (("de", WÖRTER), ("en", WORDS)):
            text = "".join(" ".join(words[i] for i in p) + "\n" for p in picks)
            (folder / f"{stem}.{lang}").write_text(text, encoding="utf-8")
    return folder


def task_overrides(name: str, tmp_path: Path) -> list[str]:
    """A few hundred steps of each task on tiny models (the same in the gpu test)."""
    if name == "bitcount":  # 5 minibatches an epoch (an index copied to the device each)
        return [
            "task=bitcount",
            "task.batch_size=4",
            "trainer.max_epochs=40",
            "trainer.log_every=7",
        ]
    if name == "lm":  # 64 windows an epoch; clipping on; a fused LSTM carrying its state
        corpus = write_lm_corpus(tmp_path / "lm")
        return [
            "task=lm", f"task.corpus={corpus}", "cell=lstm", "cell.hidden_size=16",
            "task.batch_size=4", "task.bptt=5", "task.eval_batch_size=2",
            "trainer.max_epochs=3", "trainer.log_every=25", "trainer.clip_grad_norm=1.0",
            "trainer.eval_every=100",
        ]  # fmt: skip
    corpus = write_parallel_corpus(tmp_path / "mt")  # 25 batches an epoch, packed encoder
    return [
        "task=translate", f"task.corpus={corpus}", "task.min_freq=1", "cell=lstm",
        "cell.hidden_size=8", "cell.num_layers=1", "task.embed_dim=8", "task.batch_size=4",
        "task.teacher_forcing=0.5", "task.beam_size=2", "task.max_decode_len=6",
        "task.heatmaps=0", "optim=adam", "trainer.max_epochs=6", "trainer.log_every=9",
        "trainer.clip_grad_norm=1.0", "trainer.eval_every=100",
    ]  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread, as trainer.threads=auto gives a job on a busy machine: these
    steps are tiny, and two OpenMP threads on two shared cores wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- the counter itself --------------------------------------------------------------------
def test_the_counter_sees_every_kind_of_host_wait():
    x = torch.randn(6)
    counter = SyncCounter()
    with counter.host_copies(), counter:
        x.sum().item()
        float(x.sum())
        bool(x.any())
        int(x.argmax())
        _ = x[x > 0]
        x.nonzero()
        x.tolist()
        x.cpu()
        x.numpy()
        torch.masked_select(x, x > 0)
        y = x * 2 + 1  # queued on a device: not a wait
        _ = y[torch.tensor([0, 2])]  # an index, not a mask: not a wait
    kinds = [what for _, what in counter.events]
    assert len(kinds) == 10, kinds
    assert sum("boolean mask" in k for k in kinds) == 1
    assert "wrapper" not in repr(torch.Tensor.tolist)  # the patch is undone after the block


def test_a_read_inside_the_step_is_caught(monkeypatch):
    """The counter is live inside the real step: a task loss that reads its value back (as
    ``loss.item()`` would) shows as one extra wait on every step."""
    from rnnlab.tasks.bitcount import BitCount

    def reading_loss(self, model, batch, carry):
        loss = self.sse(model, *batch)
        loss.item()  # the regression this test guards against
        return loss, carry, 1

    monkeypatch.setattr(BitCount, "train_loss", reading_loss)
    overrides = [
        "task=bitcount",
        "task.batch_size=5",
        "trainer.max_epochs=3",
        "trainer.log_every=5",
    ]
    counts, _, _ = train_counted(overrides)
    assert counts == Counter({s: 1 for s in range(1, 13)}) + expected(12, 3, 5)


# -- each task -----------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["bitcount", "lm", "translate"])
def test_steps_read_the_device_only_when_sampled_and_at_epoch_end(task, tmp_path):
    overrides = task_overrides(task, tmp_path)
    counts, result, counter = train_counted(overrides)
    epochs = int(next(o for o in overrides if "max_epochs" in o).split("=")[1])
    log_every = int(next(o for o in overrides if "log_every" in o).split("=")[1])
    assert result.steps >= 150, "a few hundred steps, or the test proves little"
    assert counts == expected(result.steps, epochs, log_every), counter.events[:10]
    # the reads are the loop's one-copy reads, not something else that happened to fit
    assert {what for _, what in counter.events} == {"Tensor.tolist"}
    assert all(torch.isfinite(torch.tensor(v)) for _, v in result.history["train/loss"])


def test_a_diverged_step_is_reported_with_its_epoch_and_first_step(monkeypatch):
    """The divergence check lives on the device between reads: a loss that turns non-finite
    at step 12 (epoch 3 of 5-step epochs) is reported at the next sampled step (15) with
    the step where it happened."""
    from rnnlab.errors import DivergenceError
    from rnnlab.tasks.bitcount import BitCount

    original = BitCount.train_loss
    seen = {"steps": 0}

    def poisoned(self, model, batch, carry):
        loss, carry, weight = original(self, model, batch, carry)
        seen["steps"] += 1
        return (loss * float("nan") if seen["steps"] >= 12 else loss), carry, weight

    monkeypatch.setattr(BitCount, "train_loss", poisoned)
    loop = build_loop(["task=bitcount", "task.batch_size=4", "trainer.log_every=5"], "cpu")
    from rnnlab.train.loop import Progress

    with pytest.raises(DivergenceError) as caught:
        loop.run(Progress())
    assert (caught.value.epoch, caught.value.step) == (3, 12)
    assert "epoch 3 (step 12)" in str(caught.value)


# -- on CUDA -------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("task", ["bitcount", "lm", "translate"])
def test_no_step_syncs_on_cuda(task, tmp_path, monkeypatch):
    """The same steps on a GPU under ``set_sync_debug_mode("error")``: any wait outside the
    loop's reads (rnnlab.train.divergence.DivergenceWatch.read) raises, batch copies to the
    device included. The first epoch runs unchecked (allocator and cuDNN warm-up)."""
    from rnnlab.train.divergence import DivergenceWatch
    from rnnlab.train.loop import Progress

    read = DivergenceWatch.read

    def allowed_read(self, *values):
        torch.cuda.set_sync_debug_mode(0)
        try:
            return read(self, *values)
        finally:
            torch.cuda.set_sync_debug_mode("error")

    monkeypatch.setattr(DivergenceWatch, "read", allowed_read)
    loop = build_loop(task_overrides(task, tmp_path), "cuda")
    epoch_once = loop.train_epoch

    def checked_epoch(p, stop):
        torch.cuda.set_sync_debug_mode("error" if p.epoch > 1 else 0)
        try:
            return epoch_once(p, stop)
        finally:
            torch.cuda.set_sync_debug_mode(0)

    loop.train_epoch = checked_epoch
    result = loop.run(Progress())
    assert result.steps >= 150


@pytest.mark.gpu
def test_cuda_graphs_on_trains_the_lm_like_eager(tmp_path):
    """``trainer.cuda_graphs=on`` (rnnlab.train.graphs): the same LM steps, the same losses
    to within float rounding of a compiled graph, and the carried state survives replays."""
    from rnnlab.train.loop import Progress

    losses = {}
    for graphs in ("off", "on"):
        overrides = [*task_overrides("lm", tmp_path / graphs), f"trainer.cuda_graphs={graphs}"]
        loop = build_loop(overrides, "cuda")
        assert loop.graphs == (graphs == "on")
        result = loop.run(Progress())
        losses[graphs] = [value for _, value in result.history["train/loss"]]
    assert losses["on"] == pytest.approx(losses["off"], rel=1e-3)
