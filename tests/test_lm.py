"""task=lm on generated corpora: folders and named files, word and character level, the token
cache, task=ptb as lm on the registered corpus, and ``rnnlab eval --text``."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch
from conftest import cli_inprocess, new_store, runs_of, task_from_config, train

from rnnlab.data.fetch import sha256_of

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
    "quickly",
    "slowly",
]
TINY = [
    "cell=lstm",
    "cell.hidden_size=16",
    "cell.num_layers=1",
    "task.batch_size=4",
    "task.eval_batch_size=2",
    "trainer.max_epochs=2",
    "device=cpu",
]


def write_corpus(folder: Path, *, lines: tuple[int, int, int] = (300, 40, 40), seed: int = 0):
    """train.txt, valid.txt, test.txt of short random sentences over a 16-word vocabulary
    (test also holds a word train never saw, so <unk> occurs)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in zip(("train.txt", "valid.txt", "test.txt"), lines, strict=True):
        text = [" ".join(rng.choices(WORDS, k=rng.randint(3, 9))) for _ in range(count)]
        if name == "test.txt":
            text[0] += " zebra"
        (folder / name).write_text("\n".join(text) + "\n", encoding="utf-8")
    return folder


def trained(
    tmp_path_factory, empty_store, overrides: list[str], experiment: str, lines=(300, 40, 40)
) -> dict:
    workdir = tmp_path_factory.mktemp(experiment)
    corpus = write_corpus(workdir / "corpus", lines=lines)
    uri = new_store(workdir, empty_store)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        train(["task=lm", f"task.corpus={corpus}", *overrides, *TINY, f"tracking.uri={uri}"])
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    (run,) = runs_of(client, experiment)
    return {"run": run, "client": client, "uri": uri, "workdir": workdir, "corpus": corpus}


@pytest.fixture(scope="module")
def word_run(tmp_path_factory, empty_store):
    return trained(tmp_path_factory, empty_store, ["task.bptt=8"], "lm")


@pytest.fixture(scope="module")
def char_run(tmp_path_factory, empty_store):
    # about 5 characters a word: a fifth of the word run's lines gives as many windows
    overrides = ["task.level=char", "task.bptt=16"]
    return trained(tmp_path_factory, empty_store, overrides, "lm", lines=(60, 12, 12))


def test_word_level_run_logs_perplexity_and_unk_share(word_run, tmp_path):
    run, client = word_run["run"], word_run["client"]
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    assert metrics["test/ppl"] == pytest.approx(math.exp(metrics["test/loss"]))
    assert 1 < metrics["test/ppl"] < len(WORDS) + 2  # better than uniform over 18 tokens
    assert metrics["train/unk_share"] == 0 and metrics["val/unk_share"] == 0
    assert metrics["test/unk_share"] > 0  # "zebra" is not in train
    assert "test/bpc" not in metrics
    vocab = Path(client.download_artifacts(run.info.run_id, "samples/vocab.txt", str(tmp_path)))
    assert sorted(vocab.read_text().split()) == sorted(["<unk>", "<eos>", *WORDS])


def test_a_users_folder_is_named_by_the_sha256_of_its_files(word_run):
    task = task_from_config("lm", corpus=str(word_run["corpus"]))
    sources = {s.split: s for s in task.data_sources()}
    assert sorted(sources) == ["test", "train", "validation"]
    assert sources["train"].digest == sha256_of(word_run["corpus"] / "train.txt")
    assert sources["validation"].source == str(word_run["corpus"] / "valid.txt")
    named = task_from_config(
        "lm",
        corpus=None,
        train=str(word_run["corpus"] / "train.txt"),
        valid=str(word_run["corpus"] / "valid.txt"),
        test=str(word_run["corpus"] / "test.txt"),
    )
    assert [s.digest for s in named.data_sources()] == [s.digest for s in task.data_sources()]


def test_char_level_logs_bits_per_character(char_run):
    metrics = char_run["run"].data.metrics
    for split in ("val", "test"):
        assert metrics[f"{split}/bpc"] == pytest.approx(metrics[f"{split}/loss"] / math.log(2))
    assert metrics["test/bpc"] < math.log2(30)  # better than uniform over the characters


def eval_text(run: dict, *args: str):
    return cli_inprocess(
        "eval", run["run"].info.run_id, "--uri", run["uri"], *args, cwd=run["workdir"]
    )


@pytest.mark.parametrize("fixture", ["word_run", "char_run"])
def test_eval_text_equals_test_metric_and_logs_to_the_run(fixture, request):
    run = request.getfixturevalue(fixture)
    test_file = run["corpus"] / "test.txt"
    result = eval_text(run, "--text", str(test_file))
    assert result.returncode == 0, result.stderr
    headline = "bpc" if fixture == "char_run" else "ppl"
    logged = run["run"].data.metrics[f"test/{headline}"]
    assert result.stdout.strip() == f"eval/test/{headline}: {logged:.2f}"
    again = run["client"].get_run(run["run"].info.run_id)
    assert again.info.status == "FINISHED"
    assert again.data.metrics[f"eval/test/{headline}"] == pytest.approx(logged, rel=1e-9)
    inputs = {d.dataset.name: d for d in again.inputs.dataset_inputs}
    assert inputs["test"].dataset.digest == sha256_of(test_file)[:36]
    assert [(t.key, t.value) for t in inputs["test"].tags] == [
        ("mlflow.data.context", "evaluation")
    ]


def test_eval_text_name_and_a_missing_file(word_run, tmp_path):
    other = tmp_path / "held out.txt"
    other.write_text("the cat sat on the mat\nthe dog ran\n" * 20, encoding="utf-8")
    result = eval_text(word_run, "--text", str(other), "--name", "held-out")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("eval/held-out/ppl: ")
    missing = eval_text(word_run, "--text", str(tmp_path / "nope.txt"))
    assert missing.returncode == 2
    assert "nope.txt does not exist" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.parametrize(("fixture", "text"), [("word_run", "the cat"), ("char_run", "ab")])
def test_a_file_too_short_for_the_streams_is_scored_as_one_like_the_served_model(
    fixture, text, request, tmp_path
):
    import mlflow.pyfunc
    import pandas as pd

    run = request.getfixturevalue(fixture)
    short = tmp_path / "short.txt"
    short.write_text(text + "\n", encoding="utf-8")
    result = eval_text(run, "--text", str(short))
    assert result.returncode == 0, result.stderr
    assert "too few for the run's 2 parallel streams: scored as one stream" in result.stderr
    headline = "bpc" if fixture == "char_run" else "ppl"
    metrics = run["client"].get_run(run["run"].info.run_id).data.metrics
    mlflow.set_tracking_uri(run["uri"])
    served = mlflow.pyfunc.load_model(run["run"].data.tags["model_uri"]).predict(
        pd.DataFrame({"text": [text]})
    )
    assert served["ppl"][0] == pytest.approx(metrics["eval/short/ppl"], abs=1e-4)
    tokens = len(text) + 1 if fixture == "char_run" else len(text.split()) + 1  # and the end
    assert served["tokens"][0] == tokens
    assert math.isfinite(metrics[f"eval/short/{headline}"])
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    refused = eval_text(run, "--text", str(empty))
    assert refused.returncode == 2 and "empty.txt is empty: it holds no text" in refused.stderr


def test_second_tokenisation_is_a_cache_hit_with_the_same_ids(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNLAB_CACHE", str(tmp_path / "cache"))
    corpus = write_corpus(tmp_path / "corpus", seed=3)
    first = task_from_config("lm", corpus=str(corpus))
    ids = {s: first.split_streams(s).clone() for s in ("train", "val", "test")}
    assert first.text.seconds > 0 and first.text.cache_hits == 0
    second = task_from_config("lm", corpus=str(corpus))
    for split, expected in ids.items():
        assert torch.equal(second.split_streams(split), expected)
    assert second.text.seconds == 0 and second.text.cache_hits == 4  # vocab + 3 splits
    assert second.get_vocab().itos == first.get_vocab().itos
    # other options that shape the vocabulary are another entry
    capped = task_from_config("lm", corpus=str(corpus), vocab_size=8)
    assert len(capped.get_vocab()) == 8 and capped.text.cache_hits == 0


def test_task_ptb_is_lm_on_the_registered_corpus(ptb_tiny_run, tmp_path_factory, empty_store):
    """The same seed gives the same metrics, key for key, from task=ptb and task=lm corpus=ptb."""
    from conftest import train_shared_run

    lm = train_shared_run(
        tmp_path_factory,
        empty_store,
        ["experiment=ptb_tiny", "task=lm", "task.corpus=ptb"],
        experiment="lm",
        data=True,
    )
    expected = ptb_tiny_run["run"].data.metrics
    got = lm["run"].data.metrics
    # system metrics are sampled on a wall-clock interval: a short run may have none
    assert {k for k in got if not k.startswith("system/")} == {
        k for k in expected if not k.startswith("system/")
    }
    for key in expected:
        if key == "tokens_per_s" or key.startswith("system/"):
            continue  # wall-clock figures
        assert got[key] == expected[key], key


def test_a_run_from_before_task_lm_still_rebuilds(shared_data):
    """Checkpoints of older PTB runs name rnnlab.tasks.ptb.PennTreebank with the old keys."""
    from conftest import compose
    from omegaconf import OmegaConf

    from rnnlab.compose import compose as build

    cfg = compose(["experiment=ptb_tiny", "device=cpu"])
    node = OmegaConf.to_container(cfg.task)
    older = ("corpus", "train", "valid", "test", "level", "min_freq", "cache_dir")
    for key in (*older, "valid_fraction", "softmax", "cutoffs", "div_value", "head_bias"):
        del node[key]
    cfg.task = OmegaConf.create({**node, "_target_": "rnnlab.tasks.ptb.PennTreebank"})
    old = build(cfg).task
    new = task_from_config("ptb", vocab_size=500)
    assert old.name == "ptb" and old.get_vocab().itos == new.get_vocab().itos


def test_a_cache_that_cannot_be_written_costs_only_time(tmp_path, monkeypatch, capsys):
    corpus = write_corpus(tmp_path / "corpus", seed=4)
    monkeypatch.setenv("RNNLAB_CACHE", str(tmp_path / "cache"))
    cached = task_from_config("lm", corpus=str(corpus)).split_streams("val")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # a file where the cache folder should be: nothing can be written
    monkeypatch.setenv("RNNLAB_CACHE", str(blocker))
    task = task_from_config("lm", corpus=str(corpus))
    assert torch.equal(task.split_streams("val"), cached)
    assert task.text.cache_hits == 0 and task.text.seconds > 0
    assert "cannot write the token cache in" in capsys.readouterr().err


def test_a_corpus_without_validation_holds_out_the_end_of_train(workdir, client):
    """task.valid_fraction: train and test named, validation the last lines of train; the
    vocabulary comes from the kept lines alone, and the run records both line ranges."""
    corpus = write_corpus(workdir / "corpus", lines=(100, 40, 40))
    train_file = corpus / "train.txt"
    lines = train_file.read_text(encoding="utf-8").splitlines()
    lines[-1] += " okapi"  # a word only the held-out lines have
    train_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    overrides = ["task=lm", "task.corpus=null", f"task.train={train_file}"]
    overrides += [f"task.test={corpus / 'test.txt'}", "task.valid_fraction=0.2"]
    result = cli_inprocess(
        "train", *overrides, *TINY, f"tracking.uri={client.tracking_uri}", cwd=workdir
    )
    assert result.returncode == 0, result.stderr
    assert f"validation: {train_file} (lines 81-100, task.valid_fraction=0.2)" in result.stdout
    (run,) = runs_of(client, "lm")
    assert run.data.params["task.valid_fraction"] == "0.2"
    assert {"val/ppl", "test/ppl"} <= set(run.data.metrics)
    sources = {i.dataset.name: i.dataset.source for i in run.inputs.dataset_inputs}
    assert "lines 1-80" in sources["corpus-train"] and "lines 81-100" in sources["corpus-val"]
    task = task_from_config(
        "lm", corpus=None, train=str(train_file), test=str(corpus / "test.txt"), valid_fraction=0.2
    )
    assert "okapi" not in task.get_vocab().stoi  # held-out words are not in the vocabulary
    assert task.split_streams("val").numel() > 0
