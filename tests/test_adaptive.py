"""task.softmax=adaptive: exact log-likelihoods, the tied adaptive input, cutoffs from the
frequency curve, and a tiny run on a generated corpus through eval --text, generate, resume."""

from __future__ import annotations

import math
import random
import signal
from pathlib import Path

import pytest
import torch
from conftest import (
    RNNLAB,
    cli_inprocess,
    compose,
    fused_cell,
    new_store,
    runs_of,
    stack_spec,
    task_from_config,
    train,
)

from rnnlab.cells.lstm import LSTMCell
from rnnlab.compose import compose as build
from rnnlab.models.adaptive import ALIGN, COVERAGE, default_cutoffs
from rnnlab.models.lm import LanguageModel

VOCAB = 300


def adaptive_model(*, tie: bool, cutoffs=(20, 100), vocab: int = VOCAB) -> LanguageModel:
    torch.manual_seed(0)
    return LanguageModel(
        stack=stack_spec(fused_cell(LSTMCell), (16, 16)),
        vocab_size=vocab,
        embedding_size=None,
        dropout=0.0,
        tie_weights=tie,
        init_range=0.1,
        cutoffs=list(cutoffs),
        div_value=2.0,
        head_bias=True,
    )


@pytest.mark.parametrize("tie", [False, True])
def test_adaptive_log_probabilities_are_a_distribution_and_the_loss_is_exact(tie):
    model = adaptive_model(tie=tie)
    ids = torch.randint(0, VOCAB, (7, 5))  # (T, B)
    targets = torch.randint(0, VOCAB, (7, 5))
    # the head words, and words of each tail cluster, among the targets
    targets[0] = torch.tensor([0, 19, 20, 99, 299])
    with torch.no_grad():
        logprob, _ = model(ids)  # (T, B, V)
        losses, _ = model(ids, targets=targets)  # (T, B)
    assert logprob.shape == (7, 5, VOCAB)
    total = logprob.double().exp().sum(-1)  # (T, B): every word's probability, summed
    assert (total - 1).abs().max() < 1e-5
    picked = logprob.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (T, B)
    assert torch.allclose(losses, -picked, atol=1e-5)


def test_every_weight_takes_part_in_a_step_whose_targets_miss_a_cluster():
    """DistributedDataParallel needs a gradient for every parameter at every step."""
    model = adaptive_model(tie=False)
    ids = torch.randint(0, VOCAB, (4, 3))
    losses, _ = model(ids, targets=torch.full((4, 3), 5))  # head words only
    losses.mean().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert missing == []
    assert model.decoder.adaptive.tail[1][1].weight.grad.abs().sum() == 0  # the same update


def test_the_tied_adaptive_input_is_the_softmax_weights():
    model = adaptive_model(tie=True)
    adaptive = model.decoder.adaptive
    names = [name for name, _ in model.named_parameters()]
    assert not any(name.startswith("embedding") for name in names)  # no weights of its own
    ids = torch.tensor([[3, 25, 150]])  # (1, 3): a head word, one of each tail cluster
    emb = model.embedding(ids)[0]  # (3, H)
    assert torch.equal(emb[0], adaptive.head.weight[3])
    for row, (word, cluster) in enumerate([(25 - 20, 0), (150 - 100, 1)], start=1):
        project, words = adaptive.tail[cluster][0].weight, adaptive.tail[cluster][1].weight
        assert torch.allclose(emb[row], words[word] @ project)
    model.embedding(ids).sum().backward()  # the input's gradient reaches the shared weights
    assert adaptive.tail[1][1].weight.grad[50].abs().sum() > 0


def test_default_cutoffs_follow_the_frequency_curve():
    counts = (1e6 / torch.arange(1, 50_001, dtype=torch.float64)).long()  # Zipf, 50k words
    cutoffs = default_cutoffs(counts)
    share = counts.cumsum(0).double() / counts.sum()
    assert len(cutoffs) == len(COVERAGE)
    for cutoff, wanted in zip(cutoffs, COVERAGE, strict=True):
        assert cutoff % ALIGN == 0
        assert share[cutoff - 1] >= wanted > share[cutoff - 1 - ALIGN]
    assert default_cutoffs(counts[:500]) == []  # too few words to be worth a cluster


WORDS = [f"w{i}" for i in range(60)]


def zipf_corpus(folder: Path) -> Path:
    rng = random.Random(0)
    weights = [1 / (rank + 1) for rank in range(len(WORDS))]
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in (("train.txt", 300), ("valid.txt", 40), ("test.txt", 40)):
        text = [" ".join(rng.choices(WORDS, weights, k=rng.randint(3, 9))) for _ in range(lines)]
        (folder / name).write_text("\n".join(text) + "\n", encoding="utf-8")
    return folder


TINY = ["task=lm", "cell.hidden_size=16", "cell.num_layers=1", "task.batch_size=4"]
TINY += ["task.eval_batch_size=2", "task.bptt=8", "trainer.max_epochs=2", "device=cpu"]
ADAPTIVE = ["task.softmax=adaptive", "task.tie_weights=true", "task.div_value=2.0"]


@pytest.fixture(scope="module")
def adaptive_run(tmp_path_factory, empty_store):
    workdir = tmp_path_factory.mktemp("adaptive")
    corpus = zipf_corpus(workdir / "corpus")
    uri = new_store(workdir, empty_store)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        one_epoch = [*TINY, "trainer.max_epochs=1", *ADAPTIVE]  # logs the MLflow model too
        train([*one_epoch, f"task.corpus={corpus}", f"tracking.uri={uri}"])
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    (run,) = runs_of(client, "lm")
    return {"run": run, "uri": uri, "workdir": workdir, "corpus": corpus, "client": client}


def test_an_adaptive_run_tags_its_cutoffs_and_scores_text_exactly(adaptive_run):
    run, workdir = adaptive_run["run"], adaptive_run["workdir"]
    tags = run.data.tags
    assert tags["softmax"] == "adaptive"
    # 62 words is too few for the coverage rule: one cluster of the rarer half
    assert tags["cutoffs"] == "31" and tags["cutoffs_reason"].startswith("default")
    assert run.data.params["task.softmax"] == "adaptive"
    metrics = run.data.metrics
    assert 1 < metrics["test/ppl"] < len(WORDS) + 2  # better than uniform
    run_id, uri = run.info.run_id, adaptive_run["uri"]
    test_file = str(adaptive_run["corpus"] / "test.txt")
    scored = cli_inprocess("eval", run_id, "--uri", uri, "--text", test_file, cwd=workdir)
    assert scored.returncode == 0, scored.stderr
    assert scored.stdout.strip() == f"eval/test/ppl: {metrics['test/ppl']:.2f}"
    sampled = cli_inprocess(
        "generate", run_id, "--uri", uri, "--words", "12", "--prime", "w0 w1", cwd=workdir
    )
    assert sampled.returncode == 0, sampled.stderr
    words = sampled.stdout.split()
    assert len(words) >= 12 and set(words) <= {*WORDS, "<eos>", "<unk>"}


def test_a_run_recorded_before_the_adaptive_softmax_reads_the_full_one(adaptive_run):
    from omegaconf import OmegaConf

    cfg = compose(["task=lm", f"task.corpus={adaptive_run['corpus']}", "device=cpu"])
    task = OmegaConf.to_container(cfg.task)
    for key in ("softmax", "cutoffs", "div_value", "head_bias"):
        del task[key]
    cfg.task = OmegaConf.create(task)
    assert build(cfg).task.options.softmax == "full"


def test_the_head_has_a_bias_and_runs_recorded_before_it_rebuild_without_one(adaptive_run):
    from omegaconf import OmegaConf

    corpus = f"task.corpus={adaptive_run['corpus']}"
    cfg = compose([*TINY, *ADAPTIVE, corpus])
    parts = build(cfg)
    model = parts.task.build_model(stack=parts.stack)
    assert parts.task.options.head_bias is True
    head = model.decoder.adaptive.head  # (head words + clusters) x H, and the bias
    assert head.bias is not None and head.bias.shape == (head.out_features,)
    # what an adaptive run recorded before task.head_bias wrote: no such key, no bias
    node = OmegaConf.to_container(cfg.task)
    del node["head_bias"]
    cfg.task = OmegaConf.create(node)
    old = build(cfg)
    assert old.task.options.head_bias is False
    old_model = old.task.build_model(stack=old.stack)
    assert old_model.decoder.adaptive.head.bias is None
    # the keys its checkpoint holds, so eval and resume load it as saved
    assert "decoder.adaptive.head.bias" in model.state_dict()
    assert "decoder.adaptive.head.bias" not in old_model.state_dict()


def test_cutoffs_and_their_checks_come_from_the_vocabulary(adaptive_run):
    corpus = str(adaptive_run["corpus"])
    task = task_from_config("lm", corpus=corpus, softmax="adaptive", cutoffs=[10, 40])
    assert task.get_cutoffs() == [10, 40] and task.tags()["cutoffs_reason"] == "task.cutoffs"
    restored = task_from_config("lm", corpus=corpus, softmax="adaptive")
    restored.load_state_dict(task.state_dict())  # eval and resume rebuild the same model
    assert restored.get_cutoffs() == [10, 40]
    assert task_from_config("lm", corpus=corpus).state_dict().keys() == {"vocab"}


@pytest.mark.slow
def test_an_adaptive_run_killed_after_its_first_epoch_resumes_bit_exact(workdir, client):
    """A real process killed by its fault point right after epoch 1's checkpoint; the resume
    rebuilds the model from the checkpoint's cutoffs and ends where an unbroken run ends."""
    import os
    import subprocess

    corpus = zipf_corpus(workdir / "corpus")
    args = ["train", *TINY, *ADAPTIVE, f"task.corpus={corpus}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["RNNLAB_FAULT"] = "checkpoint.renamed@1"
    killed = subprocess.run([*RNNLAB, *args], cwd=workdir, env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (run,) = runs_of(client, "lm")
    resumed = cli_inprocess("train", f"resume={run.info.run_id}", "device=cpu", cwd=workdir)
    assert resumed.returncode == 0, resumed.stderr
    reference = cli_inprocess(*args, cwd=workdir)
    assert reference.returncode == 0, reference.stderr
    runs = {r.info.run_id: r for r in runs_of(client, "lm")}
    done = runs.pop(run.info.run_id)
    (ref,) = runs.values()
    for key in ("val/ppl", "test/ppl", "train/loss"):
        assert done.data.metrics[key] == ref.data.metrics[key], key
    assert math.isfinite(done.data.metrics["test/ppl"])


def test_under_bf16_autocast_the_softmax_and_its_head_bias_stay_fp32():
    """What trainer.precision=bf16 (and auto on AMX CPUs and Ampere+ GPUs) hands the adaptive
    softmax: bf16 hidden states from the recurrence (fed directly here: this CPU's oneDNN
    refuses the bf16 LSTM). The softmax, head bias included, runs in fp32 with exact
    probabilities and an fp32 gradient for the bias."""
    softmax = adaptive_model(tie=False).decoder
    hidden = torch.randn(35, 16).to(torch.bfloat16).requires_grad_()  # (N, H), as autocast gives
    targets = torch.randint(0, VOCAB, (35,))
    targets[:4] = torch.tensor([0, 19, 20, 299])  # head, edges of the tail clusters
    with torch.autocast("cpu", dtype=torch.bfloat16):
        nll = softmax.nll(hidden, targets)  # (N,)
        with torch.no_grad():
            logprob = softmax(hidden)  # (N, V)
    assert nll.dtype == torch.float32 and logprob.dtype == torch.float32
    assert (logprob.double().exp().sum(-1) - 1).abs().max() < 1e-5
    picked = logprob.gather(1, targets.unsqueeze(1)).squeeze(1)  # (N,)
    assert torch.allclose(-picked, nll.detach(), atol=1e-5)
    nll.sum().backward()
    bias = softmax.adaptive.head.bias
    assert bias.dtype == torch.float32 and bias.grad is not None
    assert torch.isfinite(bias.grad).all() and bias.grad.abs().sum() > 0
