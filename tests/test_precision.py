"""``trainer.precision``: bf16 mixed precision trains under autocast, evaluates in fp32.

Real tasks and models on the real corpora (tiny presets), driven by the real ``fit`` loop;
the end-to-end case goes through MLflow and ``rnnlab eval``.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from conftest import cli_inprocess, compose, needs_cpu_bf16_lstm, runs_of, train

from rnnlab.train import precision
from rnnlab.train.precision import autocast, native_bf16, precision_warning, resolve_precision


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


@pytest.mark.parametrize("precision", ["fp32", pytest.param("bf16", marks=needs_cpu_bf16_lstm)])
def test_training_runs_in_the_chosen_precision_and_evaluation_in_fp32(shared_data, precision):
    metrics, seen = fit_preset(["experiment=ptb_tiny", f"trainer.precision={precision}"], epochs=1)
    trained = {dtype for training, dtype in seen if training}
    evaluated = {dtype for training, dtype in seen if not training}
    expected = torch.bfloat16 if precision == "bf16" else torch.float32
    assert trained == {expected}
    assert evaluated == {torch.float32}
    assert math.isfinite(metrics["val/ppl"])


@needs_cpu_bf16_lstm
def test_bf16_reaches_the_fp32_perplexity(shared_data):
    """Same seed, same data: bf16 training lands within 2 % of fp32's validation perplexity
    (ptb_small's full-size figures are in the README)."""
    fp32, _ = fit_preset(["experiment=ptb_tiny", "trainer.precision=fp32"], epochs=2)
    bf16, _ = fit_preset(["experiment=ptb_tiny", "trainer.precision=bf16"], epochs=2)
    assert fp32["val/ppl"] != bf16["val/ppl"]  # the two really ran differently
    assert bf16["val/ppl"] == pytest.approx(fp32["val/ppl"], rel=0.02)


def test_the_translation_task_trains_in_bf16(shared_data):
    metrics, seen = fit_preset(
        ["experiment=multi30k_tiny", "trainer.precision=bf16"], epochs=1, head="out"
    )
    assert {dtype for training, dtype in seen if training} == {torch.bfloat16}
    assert {dtype for training, dtype in seen if not training} == {torch.float32}
    assert math.isfinite(metrics["val/loss"])


@needs_cpu_bf16_lstm
def test_a_bf16_run_is_tagged_and_eval_reproduces_its_fp32_test_ppl(shared_data, workdir, client):
    train(["experiment=ptb_tiny", "trainer.max_epochs=1", "trainer.precision=bf16", "device=cpu"])
    (run,) = runs_of(client, "ptb")
    assert run.info.status == "FINISHED"
    assert run.data.tags["precision"] == "bf16"
    assert run.data.params["trainer.precision"] == "bf16"
    result = cli_inprocess(
        "eval", run.info.run_id, cwd=workdir, env={"RNNLAB_DATA": str(shared_data)}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"test/ppl: {run.data.metrics['test/ppl']:.2f}"


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "chosen", "says"),
    [
        (True, True, "bf16", "AMX"),
        (False, True, "fp32", "AVX512-BF16 but no AMX"),
        (False, False, "fp32", "without native bf16"),
    ],
)
def test_auto_picks_bf16_on_a_cpu_only_with_amx(monkeypatch, amx, avx512_bf16, chosen, says):
    """The rule, CPU flag by flag: AVX512-BF16 alone made the bf16 LSTM 0.73x the textbook
    loop (docs/benchmarks.md), so only AMX makes auto pick bf16; explicit bf16 there warns."""
    monkeypatch.setattr(precision, "cpu_has_amx", lambda: amx)
    monkeypatch.setattr(precision, "cpu_has_avx512_bf16", lambda: avx512_bf16)
    cpu = torch.device("cpu")
    picked, reason = resolve_precision("auto", cpu)
    assert (picked, says in reason, reason.startswith("auto: ")) == (chosen, True, True)
    assert resolve_precision("fp32", cpu) == ("fp32", "set by trainer.precision")
    warning = precision_warning("bf16", cpu)
    assert (warning is None) == (chosen == "bf16")
    if warning is not None:
        assert says in warning and "trainer.precision=auto or fp32" in warning


def test_auto_reads_this_machines_cpu_flags():
    flags = precision.cpu_flags()
    picked, reason = resolve_precision("auto", torch.device("cpu"))
    if flags:  # Linux: the choice follows /proc/cpuinfo
        assert picked == ("bf16" if "amx_bf16" in flags else "fp32"), reason


def test_a_run_is_tagged_with_its_precision_and_threads_and_why(bitcount_run):
    tags = bitcount_run["run"].data.tags
    params = bitcount_run["run"].data.params
    assert (params["trainer.precision"], params["trainer.threads"]) == ("auto", "auto")
    picked, reason = resolve_precision("auto", torch.device("cpu"))
    assert (tags["precision"], tags["precision_reason"]) == (picked, reason)
    assert int(tags["threads"]) >= 1 and tags["threads_reason"].startswith("auto: ")


def test_emulated_bf16_is_warned_about_and_fp32_never_is():
    cpu = torch.device("cpu")
    assert precision_warning("fp32", cpu) is None
    warning = precision_warning("bf16", cpu)
    if native_bf16(cpu):
        assert warning is None
    else:
        assert "trainer.precision=auto or fp32" in warning and "emulated" in warning


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
