"""Penn Treebank language model: batching, truncated BPTT, the Zaremba schedule, and a
tiny end-to-end run on the real corpus (metrics, artifacts, eval, generate)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from conftest import (
    cli_inprocess,
    compose,
    fused_cell,
    stack_spec,
    task_from_config,
)

from rnnlab.cells.lstm import LSTMCell
from rnnlab.data.bptt import batchify, num_windows, windows
from rnnlab.models.lm import LanguageModel
from rnnlab.models.stack import StackSpec
from rnnlab.train.schedules import zaremba_decay


def lstm_stack(*sizes: int) -> StackSpec:
    return stack_spec(fused_cell(LSTMCell), sizes)


def language_model(*, stack: StackSpec, vocab_size: int, **options) -> LanguageModel:
    """A LanguageModel with PTB's YAML defaults for the options not given (dropout 0 here)."""
    defaults = {
        "embedding_size": None,
        "dropout": 0.0,
        "tie_weights": False,
        "init_range": 0.1,
        "cutoffs": None,
        "div_value": 4.0,
        "head_bias": True,
    }
    return LanguageModel(stack=stack, vocab_size=vocab_size, **{**defaults, **options})


def test_batchify_lays_the_corpus_out_as_contiguous_streams():
    ids = torch.arange(23)
    streams = batchify(ids, 4)
    assert streams.shape == (5, 4)  # (T, B): the last 3 ids do not fill a row
    for b in range(4):
        assert streams[:, b].tolist() == list(range(5 * b, 5 * b + 5))


def test_windows_pair_each_input_with_the_next_token_and_cover_the_streams():
    streams = batchify(torch.arange(40), 4)  # (10, 4)
    pairs = list(windows(streams, 4))
    assert [x.shape for x, _ in pairs] == [(4, 4), (4, 4), (1, 4)]  # 9 steps have a target
    assert len(pairs) == num_windows(streams, 4)
    for x, y in pairs:
        assert torch.equal(y, x + 1)  # the target is the next token of the same stream
    assert torch.equal(torch.cat([x for x, _ in pairs]), streams[:-1])
    assert torch.equal(torch.cat([y for _, y in pairs]), streams[1:])


def test_batching_rejects_too_little_data():
    with pytest.raises(ValueError, match="too few"):
        batchify(torch.arange(5), 4)


def test_hidden_state_is_detached_between_windows():
    torch.manual_seed(0)
    vocab = 20
    model = language_model(stack=lstm_stack(8, 8), vocab_size=vocab, init_range=0.1)
    task = task_from_config("ptb", batch_size=2, bptt=3)
    first = torch.tensor([[1, 2], [3, 4], [5, 6]])  # (t, B): tokens 1..6
    second = torch.tensor([[11, 12], [13, 14], [15, 16]])  # tokens 11..16, disjoint
    carry = model.init_state(2)
    _, carry, weight = task.train_loss(model, (first, first + 1), carry)
    assert weight == 6
    assert carry[0][0].grad_fn is not None  # the carry still remembers the first window ...
    loss, _, _ = task.train_loss(model, (second, second + 1), carry)
    loss.backward()
    grad = model.embedding.weight.grad
    assert grad[11:17].abs().sum() > 0
    assert grad[1:7].abs().sum() == 0  # ... but no gradient flows back into it
    # without the detach, the same second window does reach the first window's embeddings
    model.zero_grad()
    carry = model.init_state(2)
    _, carry = model(first, carry)
    logits, _ = model(second, carry)
    torch.nn.functional.cross_entropy(logits.view(-1, vocab), (second + 1).view(-1)).backward()
    assert model.embedding.weight.grad[1:7].abs().sum() > 0


def test_sum_over_time_scales_the_gradient_not_the_logged_loss():
    batch = (torch.tensor([[1, 2], [3, 4], [5, 6], [7, 8]]), torch.tensor([[2, 3]] * 4))
    grads, values = [], []
    for summed in (False, True):
        torch.manual_seed(0)
        model = language_model(stack=lstm_stack(8), vocab_size=10, init_range=0.1)
        task = task_from_config("ptb", batch_size=2, bptt=4, sum_over_time=summed)
        loss, _, _ = task.train_loss(model, batch, model.init_state(2))
        loss.backward()
        values.append(loss.item())
        grads.append(model.decoder.bias.grad.clone())
    assert values[0] == pytest.approx(values[1], rel=1e-6)
    torch.testing.assert_close(grads[1], 4 * grads[0])  # 4 time steps


def test_tie_weights_shares_the_matrix_and_checks_sizes():
    model = language_model(stack=lstm_stack(16), vocab_size=30, tie_weights=True)
    assert model.decoder.weight is model.embedding.weight
    assert model(torch.zeros(3, 2, dtype=torch.long))[0].shape == (3, 2, 30)
    with pytest.raises(ValueError, match="tie_weights needs the last hidden size"):
        language_model(stack=lstm_stack(16), vocab_size=30, embedding_size=8, tie_weights=True)


def test_a_bad_model_option_is_a_config_error_naming_the_fix():
    from rnnlab.data.vocab import Vocab
    from rnnlab.errors import ConfigError

    task = task_from_config("ptb", embedding_size=8, tie_weights=True)
    task.load_state_dict({"vocab": Vocab(["<unk>", "<eos>", "a", "b"]).state_dict()})
    with pytest.raises(ConfigError, match="task.embedding_size=16"):
        task.build_model(stack=lstm_stack(16))
    with pytest.raises(ConfigError, match="task.max_tokens=50 is too small"):
        task_from_config("ptb", max_tokens=50)


def test_init_range_bounds_every_weight():
    model = language_model(stack=lstm_stack(16, 16), vocab_size=30, init_range=0.05)
    for param in model.parameters():
        assert param.abs().max() <= 0.05


def test_zaremba_schedule_keeps_then_divides_the_lr():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = zaremba_decay(optimizer, keep_epochs=4, decay=2.0)
    lrs = []
    for _ in range(7):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == [1.0, 1.0, 1.0, 1.0, 0.5, 0.25, 0.125]


def test_presets_carry_zaremba_hyperparameters():
    expected = {
        "ptb_small": (200, 0.0, 13, 20, 0.1, 4, 2.0, 5.0),
        "ptb_medium": (650, 0.5, 39, 35, 0.05, 6, 1.2, 5.0),
        "ptb_large": (1500, 0.65, 55, 35, 0.04, 14, 1.15, 10.0),
    }
    for preset, (hidden, dropout, epochs, bptt, init, keep, decay, clip) in expected.items():
        cfg = compose([f"experiment={preset}"])
        assert (cfg.cell.name, cfg.cell.hidden_size, cfg.cell.num_layers) == ("lstm", hidden, 2)
        assert cfg.cell.dropout == dropout and cfg.task.dropout == dropout
        assert (cfg.trainer.max_epochs, cfg.task.bptt, cfg.task.batch_size) == (epochs, bptt, 20)
        assert (cfg.task.init_range, cfg.trainer.clip_grad_norm) == (init, clip)
        assert (cfg.optim.name, cfg.optim.lr, cfg.sched.name) == ("sgd", 1.0, "zaremba")
        assert (cfg.sched.keep_epochs, cfg.sched.decay) == (keep, decay)
    # every preset leaves the precision to auto (bf16 only where faster and harmless)
    presets = ("ptb_tiny", "ptb_small", "ptb_medium", "ptb_large")
    precisions = [compose([f"experiment={p}"]).trainer.precision for p in presets]
    assert precisions == ["auto"] * 4


def test_task_ptb_picks_sgd_at_lr_1_but_the_command_line_wins():
    cfg = compose(["task=ptb"])
    assert (cfg.optim.name, cfg.optim.lr, cfg.cell.name) == ("sgd", 1.0, "lstm")
    assert compose(["task=ptb", "optim=adam"]).optim.lr == 0.001
    assert compose(["task=ptb", "optim.lr=0.5"]).optim.lr == 0.5


# --- the real corpus ----------------------------------------------------------------------


@pytest.mark.corpus
def test_vocabulary_is_the_10k_words_of_train_with_eos(real_data):
    task = task_from_config("ptb")
    vocab = task.get_vocab()
    assert len(vocab) == 10000
    assert "<eos>" in vocab and "<unk>" in vocab
    streams = task.split_streams("val")
    assert streams.shape[1] == task.options.eval_batch_size
    assert (streams != vocab.unk_index).float().mean() > 0.9  # val words are in the vocabulary


def test_vocabulary_is_every_word_of_train_with_eos(shared_data):
    """The same rule on the fixture corpus, whose few hundred words all fit under the cap."""
    task = task_from_config("ptb")
    vocab = task.get_vocab()
    words = set((shared_data / "ptb" / "ptb.train.txt").read_text().split())
    assert set(vocab.itos) == words | {"<eos>"}
    assert vocab.itos[:2] == ["<unk>", "<eos>"]
    streams = task.split_streams("val")
    assert streams.shape[1] == task.options.eval_batch_size
    assert (streams != vocab.unk_index).float().mean() > 0.8  # val words are in the vocabulary


def test_evaluation_is_exact_across_windows(shared_data):
    torch.manual_seed(0)
    task = task_from_config(
        "ptb", batch_size=4, bptt=7, eval_batch_size=3, vocab_size=200, max_tokens=600
    )
    model = language_model(stack=lstm_stack(16, 16), vocab_size=200).eval()
    windowed = task.evaluate(model, "val").metrics
    # the same streams in one window: carrying the state across windows changes nothing
    task.bptt = 10_000
    whole = task.evaluate(model, "val").metrics
    assert windowed["val/loss"] == pytest.approx(whole["val/loss"], rel=1e-5)
    assert windowed["val/ppl"] == pytest.approx(math.exp(windowed["val/loss"]), rel=1e-12)
    streams = task.split_streams("val")
    x, y = streams[:-1].long(), streams[1:].long()  # the streams are int32
    logits, _ = model(x)
    direct = torch.nn.functional.cross_entropy(logits.view(-1, 200), y.reshape(-1))
    assert windowed["val/loss"] == pytest.approx(direct.item(), rel=1e-5)


@pytest.fixture
def tiny_run(ptb_tiny_run):
    """The session's ptb_tiny run on the real corpus (trained once, only read here)."""
    return ptb_tiny_run


def test_tiny_run_logs_every_metric(tiny_run):
    run, client = tiny_run["run"], tiny_run["client"]
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    run_id = run.info.run_id
    for key in ("train/loss", "train/ppl", "val/loss", "val/ppl", "lr", "tokens_per_s"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == [1, 2], key
    assert metrics["train/ppl"] == pytest.approx(math.exp(metrics["train/loss"]))
    assert metrics["val/ppl"] == pytest.approx(math.exp(metrics["val/loss"]))
    assert metrics["tokens_per_s"] > 0
    assert math.isfinite(metrics["test/ppl"]) and 1 < metrics["test/ppl"] < 500
    assert client.get_metric_history(run_id, "grad_norm")  # sampled every log_every steps
    # the Zaremba schedule of the preset: lr 1 for epoch 1, then halved
    assert [m.value for m in client.get_metric_history(run_id, "lr")] == [1.0, 0.5]
    # it learns: after 2 epochs the model beats the uniform guess over 500 words by far
    assert metrics["val/ppl"] < 250


def test_tiny_run_keeps_the_best_checkpoint_the_vocabulary_and_a_sample(tiny_run, tmp_path):
    client, run_id = tiny_run["client"], tiny_run["run"].info.run_id
    ckpts = {a.path for a in client.list_artifacts(run_id, "checkpoints")}
    assert "checkpoints/best.pt" in ckpts
    vocab_file = Path(client.download_artifacts(run_id, "samples/vocab.txt", str(tmp_path)))
    words = vocab_file.read_text().split("\n")[:-1]
    assert len(words) == 500 and words[:2] == ["<unk>", "<eos>"]
    sample = Path(client.download_artifacts(run_id, "samples/sample.txt", str(tmp_path)))
    sampled = sample.read_text().split()
    assert len(sampled) == 100 and set(sampled) <= set(words)


def test_eval_reproduces_the_logged_test_ppl(tiny_run):
    run = tiny_run["run"]
    result = cli_inprocess(
        "eval",
        run.info.run_id,
        "--uri",
        tiny_run["uri"],
        cwd=tiny_run["workdir"],
        env={"RNNLAB_DATA": str(tiny_run["data"])},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"test/ppl: {run.data.metrics['test/ppl']:.2f}"


def test_generate_samples_the_requested_number_of_known_words(tiny_run, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from rnnlab.cli import cli

    run_id = tiny_run["run"].info.run_id
    vocab_file = tiny_run["client"].download_artifacts(run_id, "samples/vocab.txt", str(tmp_path))
    vocab = set(Path(vocab_file).read_text().split())
    monkeypatch.setenv("RNNLAB_DATA", os.devnull)  # generation needs the run, not the corpus
    args = ["generate", run_id, "--uri", tiny_run["uri"], "--words", "37"]
    runner = CliRunner()
    result = runner.invoke(cli, [*args, "--prime", "the stock market"])
    assert result.exit_code == 0, result.output
    words = result.stdout.split()
    assert len(words) == 37
    assert set(words) <= vocab
    again = runner.invoke(cli, [*args, "--prime", "the stock market"])
    assert again.stdout == result.stdout  # same seed, same text
    other = runner.invoke(cli, [*args, "--prime", "the stock market", "--seed", "1"])
    assert other.stdout != result.stdout
    bad = runner.invoke(cli, [*args, "--prime", "the xyzzy market"])
    assert bad.exit_code == 2
    assert "not in the run's vocabulary: xyzzy" in bad.stderr


@pytest.mark.parametrize("cell", ["elman", "rnn_tanh", "rnn_relu", "lstm", "gru"])
def test_any_cell_of_the_cell_group_runs_the_language_model(cell):
    from rnnlab.compose import compose as build
    from rnnlab.data.vocab import Vocab

    cfg = compose(["task=ptb", f"cell={cell}", "cell.hidden_size=8", "device=cpu"])
    parts = build(cfg)
    task = parts.task
    task.load_state_dict({"vocab": Vocab(["<unk>", "<eos>", *"abcdefgh"]).state_dict()})
    model = task.build_model(stack=parts.stack)
    x = torch.randint(0, 10, (5, task.batch_size))  # (t, B)
    carry = task.init_carry(model)
    for _ in range(2):  # two windows: the carry from the first feeds the second
        loss, carry, weight = task.train_loss(model, (x, x), carry)
        loss.backward()
    assert weight == x.numel() and math.isfinite(loss.item())
    assert model.embedding.weight.grad is not None
