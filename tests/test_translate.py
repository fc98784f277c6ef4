"""translate: attention masking, beam search, a toy task learned end to end, and a real
multi30k_tiny run on a sqlite store checked against sacreBLEU's own command line."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import (
    cli_inprocess,
    fused_cell,
    stack_spec,
    task_from_config,
)

from rnnlab.cells.gru import GRUCell
from rnnlab.cells.lstm import LSTMCell
from rnnlab.cells.rnn import RNNTanhCell
from rnnlab.data.buckets import bucketed_batches, pad
from rnnlab.data.text import read_gzip_lines
from rnnlab.errors import DataError
from rnnlab.models.attention import KINDS, build_attention
from rnnlab.models.beam import beam_decode, greedy_decode
from rnnlab.models.seq2seq import Seq2Seq

PAD, BOS, EOS = 0, 2, 3


def small_model(
    cell=GRUCell,
    *,
    vocab: int = 10,
    hidden: int = 32,
    layers: int = 1,
    fused: bool = True,
    attention: str = "dot",
):
    spec = stack_spec(fused_cell(cell, fused=fused), (hidden,) * layers)
    return Seq2Seq(
        stack=spec,
        src_vocab_size=vocab,
        tgt_vocab_size=vocab,
        pad_index=PAD,
        embed_dim=16,
        attention=attention,
        dropout=0.0,
        tie_embeddings=False,
    )


# -- attention and decoding --------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_attention_gives_padding_exactly_zero_weight(kind):
    torch.manual_seed(0)
    attention = build_attention(kind, query_size=8, memory_size=8)
    lengths = torch.tensor([5, 2, 3])
    memory = torch.randn(5, 3, 8)  # (S, B, C)
    mask = torch.arange(5).unsqueeze(1) < lengths.unsqueeze(0)  # (S, B)
    query = torch.randn(3, 8)
    context, weights = attention(query, attention.keys(memory), memory, mask)
    for b, n in enumerate(lengths.tolist()):
        assert torch.all(weights[b, n:] == 0.0)  # exactly zero, not merely small
        assert torch.all(weights[b, :n] > 0.0)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3))
    # what sits in the padding cannot change the result
    noisy = memory.clone()
    noisy[~mask] = 1e4
    context2, weights2 = attention(query, attention.keys(noisy), noisy, mask)
    assert torch.equal(weights, weights2)
    torch.testing.assert_close(context, context2)


CELL_CASES = [(GRUCell, 1, True), (LSTMCell, 2, True), (RNNTanhCell, 1, False)]


@pytest.mark.parametrize(("cell", "layers", "fused"), CELL_CASES)
def test_beam_of_one_is_greedy_and_beams_are_independent_of_the_batch(cell, layers, fused):
    torch.manual_seed(1)
    model = small_model(cell, vocab=12, layers=layers, fused=fused, attention="bahdanau").eval()
    src, lengths = pad([[4, 5, 6, 7, 8], [9, 4], [5, 6, 11]], pad_index=PAD)
    kwargs = {"bos_index": BOS, "eos_index": EOS, "max_len": 12}
    greedy, _ = greedy_decode(model, src, lengths, **kwargs)
    assert beam_decode(model, src, lengths, beam_size=1, **kwargs) == greedy
    batched = beam_decode(model, src, lengths, beam_size=4, alpha=0.6, **kwargs)
    alone = [
        beam_decode(
            model, src[: int(n), b : b + 1], lengths[b : b + 1], beam_size=4, alpha=0.6, **kwargs
        )[0]
        for b, n in enumerate(lengths)
    ]
    assert batched == alone


@pytest.mark.parametrize("alpha", [0.0, 0.6, -0.5])
def test_a_sentence_leaving_the_beam_early_keeps_its_answer(alpha, monkeypatch):
    """A sentence leaves the beam's batch once no live hypothesis can beat its best finished
    one. The bound is exact (for any length penalty), so searching every sentence to the
    length limit gives the same answers; and sentences do leave early here."""
    from rnnlab.models import beam

    torch.manual_seed(3)
    model = small_model(LSTMCell, vocab=12, layers=1, fused=True, attention="general").eval()
    sentences = [[4 + (i * j) % 8 for j in range(2 + i % 5)] for i in range(24)]
    src, lengths = pad(sentences, pad_index=PAD)
    kwargs = {"bos_index": BOS, "eos_index": EOS, "max_len": 15, "beam_size": 4, "alpha": alpha}
    left_early, real = [], beam.settled

    def counting(*args, **kw):
        done = real(*args, **kw)
        left_early.append(int(done.sum()))
        return done

    monkeypatch.setattr(beam, "settled", counting)
    early = beam.beam_decode(model, src, lengths, **kwargs)
    assert sum(left_early[:-1]) > 0, "no sentence left before the length limit: nothing tested"
    monkeypatch.setattr(beam, "settled", lambda scores, *a, **kw: scores[:, 0] != scores[:, 0])
    assert beam.beam_decode(model, src, lengths, **kwargs) == early


@pytest.mark.parametrize(("cell", "layers", "fused"), CELL_CASES)
def test_teacher_forcing_zero_feeds_the_models_own_greedy_tokens(cell, layers, fused):
    torch.manual_seed(2)
    model = small_model(cell, vocab=12, layers=layers, fused=fused, attention="general").eval()
    src, lengths = pad([[4, 5, 6, 7], [9, 4, 10], [5, 6, 11, 4]], pad_index=PAD)
    tgt_in = torch.tensor([[BOS] * 3] + [[7, 8, 9]] * 5)  # (6, 3), no padding
    with torch.no_grad():
        forced = model(src, lengths, tgt_in, teacher_forcing=1.0).argmax(-1)  # (T, B)
        own = model(src, lengths, tgt_in, teacher_forcing=0.0).argmax(-1)  # (T, B)
    greedy, _ = greedy_decode(model, src, lengths, bos_index=BOS, eos_index=EOS, max_len=6)
    for b, hyp in enumerate(greedy):
        assert own[: len(hyp), b].tolist() == hyp
    assert torch.equal(forced[0], own[0])  # the first step sees BOS either way


def test_bucketed_batches_cover_every_example_once_and_group_lengths():
    lengths = [
        int(x) for x in torch.randint(1, 40, (500,), generator=torch.Generator().manual_seed(0))
    ]
    batches = list(
        bucketed_batches(lengths, batch_size=16, generator=torch.Generator().manual_seed(1))
    )
    assert sorted(i for b in batches for i in b) == list(range(500))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(
        batches
    )
    assert spread < 5  # random batches of 16 from 1..39 would spread ~30


def test_toy_reversal_is_learned_to_about_100_bleu():
    """Synthetic reversal through the same model, loss shape and decoders as translate."""
    import sacrebleu

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)

    def sample(n):
        return [
            torch.randint(
                4, 10, (int(torch.randint(2, 6, (1,), generator=generator)),), generator=generator
            ).tolist()
            for _ in range(n)
        ]

    def words(seqs):
        return [" ".join(map(str, s)) for s in seqs]

    model = small_model(GRUCell, vocab=10)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    held_out = sample(64)
    src, src_lengths = pad(held_out, pad_index=PAD)
    kwargs = {"bos_index": BOS, "eos_index": EOS, "max_len": 10}
    bleu = 0.0
    for step in range(1, 401):
        batch = sample(32)
        x, x_lengths = pad(batch, pad_index=PAD)
        tgt_in, _ = pad([[BOS, *s[::-1]] for s in batch], pad_index=PAD)
        tgt_out, _ = pad([[*s[::-1], EOS] for s in batch], pad_index=PAD)
        logits = model(x, x_lengths, tgt_in)  # (T, B, V)
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, 10), tgt_out.reshape(-1), ignore_index=PAD
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 40 == 0:
            model.eval()
            hyps, _ = greedy_decode(model, src, src_lengths, **kwargs)
            refs = words([s[::-1] for s in held_out])
            bleu = sacrebleu.corpus_bleu(words(hyps), [refs], tokenize="none").score
            model.train()
            if bleu > 99:
                break
    assert bleu > 99, f"reversal reached only {bleu:.1f} BLEU after {step} steps"
    model.eval()
    beam = beam_decode(model, src, src_lengths, beam_size=3, alpha=0.6, **kwargs)
    assert sacrebleu.corpus_bleu(words(beam), [refs], tokenize="none").score > 99
    greedy_leaves_the_batch_at_eos(model, src, src_lengths, kwargs)


def greedy_leaves_the_batch_at_eos(model, src, src_lengths, kwargs) -> None:
    """Targets of 2..5 tokens end at different steps, so rows leave the batch one by one: each
    keeps the tokens, score, length and attention it gets decoded alone."""
    from rnnlab.models.beam import greedy_search, greedy_steps

    src, src_lengths = src[:, :12], src_lengths[:12]
    ids, total, lengths, attention = greedy_steps(
        model, src, src_lengths, keep_attention=True, **kwargs
    )
    assert len(set(lengths.tolist())) > 1  # they did end at different steps
    batched = greedy_search(model, src, src_lengths, alpha=0.6, **kwargs)
    for b, n in enumerate(src_lengths.tolist()):
        one = (src[:n, b : b + 1], src_lengths[b : b + 1])
        alone_ids, alone_total, alone_lengths, alone_attention = greedy_steps(
            model, *one, keep_attention=True, **kwargs
        )
        steps = int(alone_lengths)
        assert ids[b, :steps].tolist() == alone_ids[0, :steps].tolist()
        assert (ids[b, steps:] == model.pad_index).all()  # nothing after its EOS
        assert int(lengths[b]) == steps
        torch.testing.assert_close(total[b], alone_total[0])
        for t in range(steps):
            torch.testing.assert_close(attention[t][b, :n], alone_attention[t][0])
        (hyp,) = greedy_search(model, *one, alpha=0.6, **kwargs)
        assert batched[b].ids == hyp.ids
        assert batched[b].score == pytest.approx(hyp.score, rel=1e-5)  # batch-size rounding


# -- data errors ---------------------------------------------------------------------------
def test_read_errors_name_the_file_and_the_fix(tmp_path):
    good = tmp_path / "good.gz"
    good.write_bytes(gzip.compress(b"Ein Mann.\nZwei Hunde.\n"))
    assert read_gzip_lines(good, fetch_hint="rnnlab data fetch multi30k") == [
        "Ein Mann.",
        "Zwei Hunde.",
    ]
    truncated = tmp_path / "truncated.gz"
    truncated.write_bytes(gzip.compress(("Ein Mann fährt Fahrrad.\n" * 200).encode())[:-40])
    with pytest.raises(DataError, match="not a complete gzip file.*rnnlab data fetch multi30k"):
        read_gzip_lines(truncated, fetch_hint="rnnlab data fetch multi30k")
    not_gzip = tmp_path / "plain.gz"
    not_gzip.write_text("Ein Mann.\n")
    with pytest.raises(DataError, match="not a complete gzip file"):
        read_gzip_lines(not_gzip, fetch_hint="rnnlab data fetch multi30k")
    latin1 = tmp_path / "latin1.gz"
    latin1.write_bytes(gzip.compress("Ein Mann fährt.\n".encode("latin-1")))
    with pytest.raises(DataError, match="not valid UTF-8.*rnnlab data fetch multi30k"):
        read_gzip_lines(latin1, fetch_hint="rnnlab data fetch multi30k")


def copy_corpus(tmp_path: Path, shared: Path) -> Path:
    root = tmp_path / "data"
    (root / "multi30k").mkdir(parents=True)
    for f in (shared / "multi30k").glob("*.gz"):
        shutil.copy(f, root / "multi30k" / f.name)
    return root


def test_task_data_errors_missing_and_corrupt(tmp_path, monkeypatch, shared_data):
    monkeypatch.setenv("RNNLAB_DATA", str(tmp_path / "empty"))
    with pytest.raises(
        DataError, match=r"Missing data file .*train\.de\.gz.*rnnlab data fetch multi30k"
    ):
        task_from_config("translate", max_train=10).split("train")
    root = copy_corpus(tmp_path, shared_data)
    monkeypatch.setenv("RNNLAB_DATA", str(root))
    target = root / "multi30k" / "train.en.gz"
    target.write_bytes(target.read_bytes()[:-100])  # truncated download
    with pytest.raises(
        DataError, match=r"Checksum mismatch for .*train\.en\.gz.*rnnlab data fetch multi30k"
    ):
        task_from_config("translate", max_train=10).split("train")


def test_fetch_from_source_refuses_corrupt_copies(tmp_path, monkeypatch, shared_data):
    from rnnlab.data.fetch import fetch

    monkeypatch.delenv("RNNLAB_DATA")  # it would win over data_dir

    source = copy_corpus(tmp_path / "src", shared_data) / "multi30k"
    bad = source / "val.fr.gz"
    bad.write_bytes(gzip.compress(b"Un homme.\n"))
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match=r"Checksum mismatch for val\.fr\.gz.*nothing was written"):
        fetch("multi30k", data_dir=dest, source=source)
    assert not (dest / "multi30k" / "val.fr.gz").exists()
    assert not list((dest / "multi30k").glob(".*part"))
    bad.unlink()
    with pytest.raises(DataError, match=r"val\.fr\.gz is not in"):
        fetch("multi30k", data_dir=dest, source=source)


def test_missing_corpus_is_a_clear_cli_error(workdir):
    result = cli_inprocess(
        "train",
        "experiment=multi30k_tiny",
        "device=cpu",
        cwd=workdir,
        env={"RNNLAB_DATA": str(workdir / "nowhere")},
    )
    assert result.returncode == 2, result.stderr
    assert "rnnlab: error: Missing data file" in result.stderr
    assert "rnnlab data fetch multi30k" in result.stderr
    assert "Traceback" not in result.stderr


# -- multi30k_tiny end to end -------------------------------------------------------------
@pytest.fixture
def tiny_run(multi30k_tiny_run):
    """The session's multi30k_tiny run on a sqlite store (trained once, only read here)."""
    return {**multi30k_tiny_run, "work": multi30k_tiny_run["workdir"]}


def test_tiny_run_logs_every_metric_tag_and_artifact(tiny_run):
    client, run = tiny_run["client"], tiny_run["run"]
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"
    for key in ("train/loss", "val/loss", "val/ppl", "val/bleu"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == [1, 2, 3], key
    metrics = run.data.metrics
    for key in ("test/bleu", "test/chrf", "test/unk", "test/ppl", "test/loss"):
        assert key in metrics
    # throughput: training target tokens/s per epoch, decoding sentences/s at test time
    assert [m.step for m in client.get_metric_history(run_id, "tokens_per_s")] == [1, 2, 3]
    assert metrics["tokens_per_s"] > 0 and metrics["test/sentences_per_s"] > 0
    assert abs(metrics["test/ppl"] - torch.tensor(metrics["test/loss"]).exp().item()) < 1e-3
    assert 0.0 <= metrics["test/bleu"] <= 100.0
    assert run.data.tags["sacrebleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    samples = {a.path for a in client.list_artifacts(run_id, "samples")}
    assert "samples/translations_test.tsv" in samples
    assert {"samples/attention_val_0.png", "samples/attention_val_1.png"} <= samples
    local = Path(client.download_artifacts(run_id, "checkpoints/best.pt", str(tiny_run["work"])))
    checkpoint = torch.load(local, weights_only=True)
    assert checkpoint["task_state"]["src_vocab"]["itos"][:4] == ["<pad>", "<unk>", "<s>", "</s>"]
    assert len(checkpoint["task_state"]["tgt_vocab"]["itos"]) > 100


def test_logged_bleu_equals_sacrebleu_cli_on_the_tsv(tiny_run):
    client, run = tiny_run["client"], tiny_run["run"]
    work = tiny_run["work"]
    tsv = Path(
        client.download_artifacts(run.info.run_id, "samples/translations_test.tsv", str(work))
    )
    lines = tsv.read_text(encoding="utf-8").rstrip("\n").split("\n")
    assert lines[0] == "source\treference\thypothesis"
    rows = [line.split("\t") for line in lines[1:]]
    assert len(rows) == 30 and all(len(r) == 3 for r in rows)
    # the references are the raw corpus lines, untouched by tokenization
    with gzip.open(
        tiny_run["data"] / "multi30k" / "test_2016_flickr.en.gz", "rt", encoding="utf-8"
    ) as f:
        raw = [next(f).strip() for _ in range(30)]
    assert [r[1] for r in rows] == raw
    (work / "ref.txt").write_text("".join(r[1] + "\n" for r in rows), encoding="utf-8")
    (work / "hyp.txt").write_text("".join(r[2] + "\n" for r in rows), encoding="utf-8")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sacrebleu",
            str(work / "ref.txt"),
            "-i",
            str(work / "hyp.txt"),
            "-m",
            "bleu",
            "-b",
            "-w",
            "4",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert float(result.stdout.strip()) == pytest.approx(run.data.metrics["test/bleu"], abs=1e-4)


def test_eval_and_translate_commands_reuse_the_run(tiny_run):
    run = tiny_run["run"]
    env = {"RNNLAB_DATA": str(tiny_run["data"])}
    result = cli_inprocess(
        "eval", run.info.run_id, "--uri", tiny_run["uri"], cwd=tiny_run["work"], env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"test/bleu: {run.data.metrics['test/bleu']:.2f}"
    # translating needs only the checkpoint (vocabularies included), not the corpus
    nowhere = {"RNNLAB_DATA": str(tiny_run["work"] / "nowhere")}
    one = cli_inprocess(
        "translate",
        run.info.run_id,
        "Ein Mann fährt Fahrrad.",
        "--uri",
        tiny_run["uri"],
        cwd=tiny_run["work"],
        env=nowhere,
    )
    assert one.returncode == 0, one.stderr
    assert len(one.stdout.splitlines()) == 1 and one.stdout.strip()
    many = cli_inprocess(
        "translate",
        run.info.run_id,
        "--uri",
        tiny_run["uri"],
        "--beam",
        "1",
        stdin="Ein Mann fährt Fahrrad.\n\nZwei Hunde spielen im Schnee.\n",
        cwd=tiny_run["work"],
        env=nowhere,
    )
    assert many.returncode == 0, many.stderr
    assert "translated 2 sentences in" in many.stderr and "sentences/s, beam 1)" in many.stderr
    out = many.stdout.split("\n")
    assert len(out) == 4 and out[0] and out[1] == "" and out[2] and out[3] == ""
