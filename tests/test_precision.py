"""``trainer.precision``: bf16 mixed precision trains under autocast, evaluates in fp32.

Real tasks and models on the real corpora (tiny presets), driven by the real ``fit`` loop;
the end-to-end case goes through MLflow and ``rnnlab eval``.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from conftest import (
    FAST_BF16_VERDICTS,
    cli_inprocess,
    compose,
    cpu_runs_bf16_lstm,
    force_fast_bf16,
    runs_of,
    train,
)

from rnnlab.train import precision
from rnnlab.train.precision import (
    MIN_BF16_MACS,
    Workload,
    autocast,
    native_bf16,
    precision_warnings,
    resolve_precision,
    step_macs,
    workload,
)

#: a workload every rule but the hardware's lets into bf16 (ptb_small's size, a task that
#: tolerates bf16), for the tests of the hardware rule
BIG_LM = Workload(task="lm", tolerates_bf16=True, bf16_cost="-", macs=10**9)


def fit_preset(
    overrides: list[str], *, epochs: int, head: str = "decoder"
) -> tuple[dict[str, float], list]:
    """Train a preset in-process; returns its last metrics and the output dtypes of the
    model's vocabulary projection ``head`` as (training?, dtype) pairs, from a forward hook."""
    from rnnlab.compose import compose as build
    from rnnlab.train.loop import fit
    from rnnlab.train.recorder import MemoryRecorder

    parts = build(compose([*overrides, "device=cpu", "trainer.progress=false"]))
    torch.manual_seed(0)
    model = parts.task.build_model(stack=parts.stack)
    seen: list[tuple[bool, torch.dtype]] = []
    getattr(model, head).register_forward_hook(
        lambda mod, args, out: seen.append((mod.training, out.dtype))
    )
    recorder = MemoryRecorder()
    fit(
        model=model,
        task=parts.task,
        optimizer=parts.optimizer(model.parameters()),
        scheduler=None,
        settings=replace(parts.trainer, max_epochs=epochs),
        recorder=recorder,
    )
    merged: dict[str, float] = {}
    for _, metrics in recorder.metrics:
        merged.update(metrics)
    return merged, seen


#: ptb_tiny with a cell whose kernels run in bfloat16 on every CPU (oneDNN's fused LSTM needs
#: AVX512-BF16 or AMX): the precision rules are the same for every cell, and the LSTM's own
#: bf16 is checked by test_the_bf16_lstm_trains_where_the_cpu_can_and_is_refused_clearly. At
#: the LSTM's rate (1.0) the tanh RNN diverges; at 0.1 it reaches val/ppl 63 in two epochs
ANY_CPU = ["experiment=ptb_tiny", "cell=rnn_tanh", "optim.lr=0.1"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_runs_in_the_chosen_precision_and_evaluation_in_fp32(shared_data, precision):
    metrics, seen = fit_preset([*ANY_CPU, f"trainer.precision={precision}"], epochs=1)
    trained = {dtype for training, dtype in seen if training}
    evaluated = {dtype for training, dtype in seen if not training}
    expected = torch.bfloat16 if precision == "bf16" else torch.float32
    assert trained == {expected}
    assert evaluated == {torch.float32}
    assert math.isfinite(metrics["val/ppl"])


def test_bf16_reaches_the_fp32_perplexity(shared_data):
    """Same seed, same data: bf16 training lands within 2 % of fp32's validation perplexity
    (ptb_small's full-size figures, with the LSTM, are in the README)."""
    fp32, _ = fit_preset([*ANY_CPU, "trainer.precision=fp32"], epochs=2)
    bf16, _ = fit_preset([*ANY_CPU, "trainer.precision=bf16"], epochs=2)
    assert fp32["val/ppl"] != bf16["val/ppl"]  # the two really ran differently
    assert bf16["val/ppl"] == pytest.approx(fp32["val/ppl"], rel=0.02)


def test_the_translation_task_trains_in_bf16(shared_data):
    metrics, seen = fit_preset(
        ["experiment=multi30k_tiny", "trainer.precision=bf16"], epochs=1, head="out"
    )
    assert {dtype for training, dtype in seen if training} == {torch.bfloat16}
    assert {dtype for training, dtype in seen if not training} == {torch.float32}
    assert math.isfinite(metrics["val/loss"])


def test_a_bf16_run_is_tagged_and_eval_reproduces_its_fp32_test_ppl(shared_data, workdir, client):
    train([*ANY_CPU, "trainer.max_epochs=1", "trainer.precision=bf16", "device=cpu"])
    (run,) = runs_of(client, "ptb")
    assert run.info.status == "FINISHED"
    assert run.data.tags["precision"] == "bf16"
    assert run.data.params["trainer.precision"] == "bf16"
    result = cli_inprocess(
        "eval", run.info.run_id, cwd=workdir, env={"RNNLAB_DATA": str(shared_data)}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"test/ppl: {run.data.metrics['test/ppl']:.2f}"


def test_the_bf16_lstm_trains_where_the_cpu_can_and_is_refused_clearly(
    shared_data, workdir, client
):
    """ptb_tiny's fused LSTM in explicit bf16, on this CPU as it is: where oneDNN has the
    bfloat16 LSTM (AVX512-BF16 or AMX) the run trains in bf16; where it has not, the run
    fails with one paragraph naming the setting and the fix, not oneDNN's traceback."""
    result = cli_inprocess(
        "train", "experiment=ptb_tiny", "trainer.max_epochs=1", "trainer.precision=bf16",
        "device=cpu", cwd=workdir, env={"RNNLAB_DATA": str(shared_data)},
    )  # fmt: skip
    (run,) = runs_of(client, "ptb")
    if cpu_runs_bf16_lstm():
        assert result.returncode == 0, result.stderr
        assert run.info.status == "FINISHED" and run.data.tags["precision"] == "bf16"
        return
    assert result.returncode == 2, result.stderr
    assert "rnnlab: error: trainer.precision=bf16: this CPU cannot run a layer" in result.stderr
    assert "AVX512-BF16 or AMX" in result.stderr and "trainer.precision=fp32" in result.stderr
    assert "Traceback" not in result.stderr
    assert run.info.status == "FAILED"
    assert "trainer.precision=bf16" in run.data.tags["failure_reason"]


@pytest.mark.parametrize(
    ("device", "message", "becomes"),
    [
        (
            "cpu",
            f"{precision.ONEDNN_REFUSED} for the LSTM forward propagation primitive. Run",
            "config",
        ),
        ("cpu", "mat1 and mat2 shapes cannot be multiplied", "itself"),
        (
            "cuda",
            f"{precision.ONEDNN_REFUSED} for the LSTM forward propagation primitive",
            "itself",
        ),
    ],
    ids=["oneDNN refuses on the CPU", "another CPU error", "a GPU error"],
)
@pytest.mark.filterwarnings("ignore:CUDA is not available:UserWarning")  # no GPU here
def test_only_onednn_refusing_bf16_on_the_cpu_becomes_a_user_error(device, message, becomes):
    """What auto's bf16 runs on AMX CPUs and Ampere GPUs go through (the same context as an
    explicit bf16): every other error, and every error on a GPU, passes through unchanged."""
    from rnnlab.errors import ConfigError

    expected = ConfigError if becomes == "config" else RuntimeError
    with pytest.raises(expected) as raised, autocast("bf16", torch.device(device)):
        raise RuntimeError(message)
    if becomes == "config":
        assert "trainer.precision=fp32" in str(raised.value)
        assert "could not create a primitive descriptor for the LSTM" in str(raised.value)
    else:
        assert type(raised.value) is RuntimeError and str(raised.value) == message


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "chosen", "says"),
    [
        (True, True, "bf16", "AMX"),
        (False, True, "fp32", "AVX512-BF16 but no AMX"),
        (False, False, "fp32", "without native bf16"),
    ],
)
def test_auto_picks_bf16_on_a_cpu_only_with_amx(monkeypatch, amx, avx512_bf16, chosen, says):
    """The hardware rule, CPU flag by flag (for a model the task and size rules let through):
    AVX512-BF16 alone made the bf16 LSTM 0.73x the textbook loop (docs/benchmarks.md), so
    only AMX makes auto pick bf16; explicit bf16 there warns."""
    monkeypatch.setattr(precision, "cpu_has_amx", lambda: amx)
    monkeypatch.setattr(precision, "cpu_has_avx512_bf16", lambda: avx512_bf16)
    cpu = torch.device("cpu")
    picked, reason = resolve_precision("auto", cpu, BIG_LM)
    rule = "auto, all rules: " if chosen == "bf16" else "auto, hardware rule: "
    assert (picked, says in reason, reason.startswith(rule)) == (chosen, True, True), reason
    assert resolve_precision("fp32", cpu, BIG_LM) == ("fp32", "set by trainer.precision")
    warnings = precision_warnings("bf16", cpu, BIG_LM)
    assert len(warnings) == (0 if chosen == "bf16" else 1)
    for warning in warnings:
        assert says in warning and "trainer.precision=auto or fp32" in warning


def test_auto_reads_this_machines_cpu_flags():
    flags = precision.cpu_flags()
    picked, reason = resolve_precision("auto", torch.device("cpu"), BIG_LM)
    if flags:  # Linux: the choice follows /proc/cpuinfo
        assert picked == ("bf16" if "amx_bf16" in flags else "fp32"), reason


def test_a_run_is_tagged_with_its_precision_and_threads_and_why(bitcount_run):
    """bitcount trains in fp32 on every machine, and its tag says the task decided."""
    tags = bitcount_run["run"].data.tags
    params = bitcount_run["run"].data.params
    assert (params["trainer.precision"], params["trainer.threads"]) == ("auto", "auto")
    assert tags["precision"] == "fp32"
    assert tags["precision_reason"].startswith("auto, task rule: task bitcount needs fp32 (")
    assert int(tags["threads"]) >= 1 and tags["threads_reason"].startswith("auto: ")


def test_emulated_bf16_is_warned_about_and_fp32_never_is():
    cpu = torch.device("cpu")
    assert precision_warnings("fp32", cpu, BIG_LM) == []
    warnings = precision_warnings("bf16", cpu, BIG_LM)
    if native_bf16(cpu):
        assert warnings == []
    else:
        (warning,) = warnings
        assert "trainer.precision=auto or fp32" in warning and "emulated" in warning


def preset_model(preset: str):
    """A preset's task and real model. A preset on a whole corpus is built without it: the
    vocabularies that corpus gives (PTB's 10,000 words; multi30k's joint 8,000-piece BPE, as
    8,000 words a side: the same model) are loaded as if from a checkpoint. A preset on a
    slice of a corpus (``multi30k_tiny``) reads it for its vocabularies."""
    from rnnlab.compose import compose as build
    from rnnlab.data.vocab import Vocab
    from rnnlab.tasks.translate import SPECIALS

    overrides = [f"experiment={preset}", "device=cpu"]
    sliced = preset == "multi30k_tiny"
    if preset.startswith("multi30k") and not sliced:
        overrides.append("task.tokenizer=moses")
    parts = build(compose(overrides))
    task = parts.task
    if task.name == "translate" and not sliced:
        words = Vocab([*SPECIALS, *(f"w{i}" for i in range(8000 - len(SPECIALS)))])
        task.load_state_dict({"src_vocab": words.state_dict(), "tgt_vocab": words.state_dict()})
    elif task.name in ("lm", "ptb"):
        size = task.options.vocab_size
        task.load_state_dict({"vocab": Vocab([f"w{i}" for i in range(size)]).state_dict()})
    return task, task.build_model(stack=parts.stack)


BIG_PRESETS = ("ptb_medium", "ptb_large", "multi30k_gpu")


@pytest.mark.parametrize(
    ("preset", "chosen", "rule"),
    [
        ("bitcount_rmsprop", "fp32", "task"),
        ("bitcount_sgd", "fp32", "task"),
        ("ptb_tiny", "fp32", "size"),
        ("multi30k_tiny", "fp32", "size"),
        ("ptb_small", "bf16", "all"),
        ("multi30k_cpu", "bf16", "all"),
        ("multi30k_cpu_words", "bf16", "all"),
        *(pytest.param(p, "bf16", "all", marks=pytest.mark.slow) for p in BIG_PRESETS),
    ],
)
def test_auto_on_fast_bf16_hardware_keeps_fp32_for_exact_tasks_and_small_steps(
    request, monkeypatch, preset, chosen, rule
):
    """Where bf16 is fast (an AMX CPU, an Ampere GPU), auto still trains bitcount in fp32
    (task rule) and the seconds-long smoke presets in fp32 (size rule); the real LM and
    translation presets get bf16, and the tag says which rule decided."""
    if preset == "multi30k_tiny":
        request.getfixturevalue("shared_data")
    task, model = preset_model(preset)
    work = workload(task, model)
    hardware_says = ("AMX", "CUDA compute capability 8.0")
    for verdict, hardware in zip(FAST_BF16_VERDICTS, hardware_says, strict=True):
        with monkeypatch.context() as forced:
            force_fast_bf16(forced, verdict)
            picked, reason = resolve_precision("auto", torch.device("cpu"), work)
        assert picked == chosen and reason.startswith(f"auto, {rule} rule"), reason
        assert (hardware in reason) == (rule == "all"), reason
    if rule == "size":
        assert f"{work.macs:.3g} multiply-adds per training step < 3e+08" in reason


def test_the_size_rule_counts_the_weights_that_multiply_once_per_position():
    """step_macs: positions x weights outside embedding tables; a table tied to the output
    layer multiplies there, so it counts. Against the LM's layers counted by hand."""
    task, model = preset_model("ptb_tiny")  # 2x32 LSTM, 500 words, batch 10, bptt 10
    positions = task.options.batch_size * task.options.bptt
    assert task.step_positions() == positions == 100
    lstm = 2 * (4 * 32 * (32 + 32) + 2 * 4 * 32)  # two layers: W_ih, W_hh, two biases
    decoder = 32 * 500 + 500
    assert step_macs(model, positions) == positions * (lstm + decoder)
    tied = compose(["experiment=ptb_tiny", "device=cpu", "task.tie_weights=true"])
    from rnnlab.compose import compose as build

    parts = build(tied)
    parts.task.load_state_dict(task.state_dict())
    shared = parts.task.build_model(stack=parts.stack)  # embedding == decoder weight
    assert step_macs(shared, positions) == positions * (lstm + decoder)
    assert sum(p.numel() for p in shared.parameters()) == lstm + decoder
    assert step_macs(model, positions) < MIN_BF16_MACS  # ptb_tiny: fp32 by size


def test_explicit_bf16_on_a_task_that_needs_fp32_warns_naming_the_cost(fast_bf16, capsys):
    """trainer.precision=bf16 stays the user's choice: bitcount trains in bf16, after one
    warning line that names what it is expected to cost."""
    from rnnlab.train.recorder import MemoryRecorder
    from rnnlab.train.run import machine_settings

    task, model = preset_model("bitcount_rmsprop")
    settings = replace(compose_trainer(), precision="bf16")
    recorder = MemoryRecorder()
    with machine_settings(
        settings, device=torch.device("cpu"), concurrent_jobs=1, recorder=recorder,
        work=workload(task, model),
    ) as resolved:  # fmt: skip
        assert resolved.precision == "bf16"
    assert recorder.tags["precision"] == "bf16"
    assert recorder.tags["precision_reason"] == "set by trainer.precision"
    (warning,) = capsys.readouterr().err.strip().splitlines()
    assert warning.startswith("warning: trainer.precision=bf16 on task bitcount, which needs fp32")
    assert "train/loss 0.02 instead of 0.005" in warning


def compose_trainer():
    from rnnlab.compose import compose as build

    return build(compose(["device=cpu"])).trainer


def test_a_task_tolerates_bf16_only_where_it_says_so(fast_bf16):
    """The safe default: a task that declares nothing trains in fp32 under auto, even a big
    one on fast bf16 hardware."""
    from rnnlab.tasks.base import Task
    from rnnlab.tasks.bitcount import BitCount
    from rnnlab.tasks.lm import LanguageModelTask
    from rnnlab.tasks.translate import Translate

    assert Task.tolerates_bf16 is False and BitCount.tolerates_bf16 is False
    assert LanguageModelTask.tolerates_bf16 and Translate.tolerates_bf16
    work = Workload(task="forecast", tolerates_bf16=False, bf16_cost="x", macs=10**12)
    picked, reason = resolve_precision("auto", torch.device("cpu"), work)
    assert (picked, reason.startswith("auto, task rule: task forecast needs fp32")) == (
        "fp32",
        True,
    )
    assert resolve_precision("auto", torch.device("cpu"), BIG_LM)[0] == "bf16"


@pytest.mark.gpu
def test_bf16_trains_the_lstm_language_model_on_cuda():
    from rnnlab.compose import compose as build
    from rnnlab.data.vocab import Vocab

    parts = build(compose(["task=ptb", "cell=lstm", "trainer.precision=bf16", "device=cuda"]))
    task = parts.task.to(torch.device("cuda"))
    task.load_state_dict({"vocab": Vocab(["<unk>", "<eos>", *"abcdefgh"]).state_dict()})
    model = task.build_model(stack=parts.stack).cuda()
    x = torch.randint(0, 10, (35, task.batch_size), device="cuda")  # (t, B)
    carry = task.init_carry(model)
    with autocast("bf16", torch.device("cuda")):
        loss, carry, _ = task.train_loss(model, (x, x), carry)
    loss.backward()
    assert math.isfinite(loss.item())
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())
