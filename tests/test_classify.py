"""task=classify: the three layouts (long, headerless wide with label=0, UCR/UEA .ts), any
labels (-1 included), variable lengths, stratified splits, bad inputs; a real run with the
archive's own split, beating the majority class, and ``rnnlab predict`` on it."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import cli_inprocess, compose, runs_of, train
from numeric_data import classification_arrays

LABELS = np.array(["-1", "1", "walk"])


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one intra-op thread, which never waits on another on shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@functools.cache
def composed():
    """The composed train config with task=classify, once per module (Hydra's compose is
    most of a small test's time); each task merges its own keys into it."""
    return compose(["task=classify"])


def task_from_config(name: str, **options):
    """Task ``name`` (classify) with its YAML defaults and ``options`` over them, built and
    validated as ``rnnlab train`` builds it."""
    from omegaconf import OmegaConf

    from rnnlab.compose.build import build_task

    assert name == "classify"
    return build_task(OmegaConf.merge(composed(), {"task": options}).task, progress=False)


def write_ts(path, x, labels, *, lengths=None):
    lines = ["@problemName test", "@univariate true", "@classLabel true -1 1 walk", "@data"]
    for i, (row, label) in enumerate(zip(x, labels, strict=True)):
        row = row[: lengths[i]] if lengths is not None else row
        lines.append(",".join(f"{v:.5f}" for v in row) + f":{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_wide_tsv(path, x, labels):
    frame = pd.DataFrame(x)
    frame.insert(0, "label", labels)
    frame.to_csv(path, sep="\t", header=False, index=False)
    return path


def write_long(path, x, labels):
    rows = [
        {"seq": f"q{i}", "t": t, "v": v, "cls": label}
        for i, (row, label) in enumerate(zip(x, labels, strict=True))
        for t, v in enumerate(row)
    ]
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # rows in any order: time sorts
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def data():
    x, y = classification_arrays(60, length=20)
    return x, LABELS[y]


def test_three_layouts_read_the_same_sequences(tmp_path, data):
    x, labels = data
    tasks = [
        task_from_config("classify", data=str(write_ts(tmp_path / "a.ts", x, labels))),
        task_from_config(
            "classify", data=str(write_wide_tsv(tmp_path / "a.tsv", x, labels)), label=0
        ),
        task_from_config(
            "classify",
            data=str(write_long(tmp_path / "a.csv", x, labels)),
            series="seq",
            time="t",
            label="cls",
            features=["v"],
        ),
    ]
    for task in tasks:
        task.prepare()
        assert task.labels == ["-1", "1", "walk"]  # numbers first, numerically, then text
        sizes = {k: len(v.lengths) for k, v in task.splits.items()}
        assert sizes == {"train": 42, "val": 9, "test": 9}  # 70/15/15 of each class of 20
        for part in task.splits.values():  # stratified: every class in every split
            assert set(part.classes.tolist()) == {0, 1, 2}
    ts, tsv, long = tasks
    for split in ("train", "test"):
        np.testing.assert_allclose(ts.splits[split].values, tsv.splits[split].values, atol=1e-4)
    from rnnlab.data.sequences import read_sequences

    found = read_sequences(tmp_path / "a.csv", fmt="long", label="cls", series="seq", time="t")
    for name, seq, label in zip(found.ids, found.values, found.labels, strict=True):
        i = int(name[1:])  # rows shuffled in the file, each sequence put back in time order
        np.testing.assert_allclose(seq[:, 0], x[i], atol=1e-6)
        assert label == labels[i]


@pytest.mark.parametrize("cell", ["lstm", "mingru", "lru"])
def test_variable_lengths_are_padded_and_packed(tmp_path, data, cell):
    """The fused LSTM (packed) and the scan cells (masked scan) alike: padding never reaches
    a logit."""
    from conftest import cell_factory, stack_spec

    from rnnlab.tasks.classify import Split

    x, labels = data
    lengths = 10 + np.arange(60) % 11
    task = task_from_config(
        "classify", data=str(write_ts(tmp_path / "v.ts", x, labels, lengths=lengths))
    )
    task.prepare()
    test = task.splits["test"]
    assert (
        test.values.shape[1] == int(test.lengths.max()) and test.lengths.min() < test.lengths.max()
    )
    model = task.build_model(stack=stack_spec(cell_factory(cell), (8,)))
    model.eval()
    logits, _ = task.predict(model, test)
    padded = Split(
        torch_pad(test.values, 7), test.lengths, test.classes, test.source
    )  # more padding must not change a thing
    again, _ = task.predict(model, padded)
    np.testing.assert_allclose(logits.numpy(), again.numpy(), atol=1e-5)


@pytest.mark.parametrize("fused", [True, False], ids=["packed", "stepwise"])
def test_bidirectional_features_read_each_whole_sequence(fused):
    """The backward direction's summary is its output after reading the whole sequence (at
    the first step), the forward's at each sequence's own last step: a padded batch gives
    each sequence the features it has alone, equal to the last layer's final states; and the
    backward half changes with the first element (which it reads last), which a summary
    taken at the last step never sees."""
    from conftest import fused_cell, stack_spec

    from rnnlab.cells.gru import GRUCell
    from rnnlab.models.seq2one import SequenceClassifier

    def classifier(layers):
        spec = stack_spec(fused_cell(GRUCell, fused=fused), layers, bidirectional=True)
        return SequenceClassifier(stack=spec, input_size=2, classes=3, dropout=0.0).eval()

    torch.manual_seed(0)
    lengths = torch.tensor([7, 3, 5])
    x = torch.randn(7, 3, 2)  # (T, B, I)
    for b, n in enumerate(lengths.tolist()):
        x[n:, b] = 99.0  # padding: must never reach a feature
    changed = x.clone()
    changed[0] += 1.0  # the first element of every sequence
    two, one = classifier((6, 5)), classifier((5,))
    with torch.no_grad():
        batch = two.features(x, lengths)  # (B, 2·5)
        _, states = two.rnn(x, lengths=lengths)
        ends = torch.cat([states[-2][0], states[-1][0]], dim=-1)  # last layer, both directions
        torch.testing.assert_close(batch, ends, atol=1e-6, rtol=1e-5)
        for b, n in enumerate(lengths.tolist()):
            alone = two.features(x[:n, b : b + 1], torch.tensor([n]))  # (1, 2·5)
            torch.testing.assert_close(batch[b : b + 1], alone, atol=1e-6, rtol=1e-5)
        shift = one.features(changed, lengths) - one.features(x, lengths)  # one layer
    assert (shift[:, 5:].abs().amax(1) > 1e-4).all(), shift  # the backward half moved


def torch_pad(values, extra):

    return torch.cat([values, torch.full((values.shape[0], extra, values.shape[2]), 99.0)], dim=1)


def test_bad_inputs(tmp_path, data):
    from rnnlab.errors import RnnlabError

    x, labels = data
    test_labels = labels.copy()
    test_labels[0] = "run"
    train_path = write_ts(tmp_path / "train.ts", x, labels)
    test_path = tmp_path / "test.ts"
    test_path.write_text(
        write_ts(tmp_path / "t.ts", x, test_labels)
        .read_text()
        .replace("@classLabel true -1 1 walk", "@classLabel true -1 1 walk run")
    )
    task = task_from_config("classify", data=None, train=str(train_path), test=str(test_path))
    with pytest.raises(RnnlabError, match="has label 'run', which the training data never show"):
        task.prepare()
    x_missing = x.copy()
    x_missing[3, 4] = np.nan
    wide = tmp_path / "m.tsv"
    write_wide_tsv(wide, x_missing, labels)
    with pytest.raises(RnnlabError, match=r"row 4 \(a value that is not a number, or a gap\)"):
        task_from_config("classify", data=str(wide), label=0).prepare()


def train_classify(workdir, empty_store, *, n: int, epochs: int) -> dict:
    """A real run on generated sine classes, the archive's split (.ts train and test)."""
    from conftest import new_store, run_env

    x, y = classification_arrays(n, length=24, seed=1)
    labels = LABELS[y]
    cut = 2 * n // 3
    train_path = write_ts(workdir / "train.ts", x[:cut], labels[:cut])
    test_path = write_ts(workdir / "test.ts", x[cut:], labels[cut:])
    uri = new_store(workdir, empty_store)
    overrides = [
        "task=classify",
        f"task.train={train_path}",
        f"task.test={test_path}",
        "cell.hidden_size=16",
        "task.batch_size=8",
        "optim.lr=0.01",
        f"trainer.max_epochs={epochs}",
        "tracking.log_model=false",
        "device=cpu",
        "trainer.threads=1",  # tests share the cores: one thread never waits on another
        f"tracking.uri={uri}",
    ]
    with run_env(workdir):
        train(overrides)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    (run,) = runs_of(client, "classify")
    return {"run": run, "client": client, "uri": uri, "workdir": workdir, "x": x[cut:]}


@pytest.fixture(scope="module")
def classify_run(tmp_path_factory, empty_store):
    return train_classify(tmp_path_factory.mktemp("classify"), empty_store, n=45, epochs=2)


def test_classify_run_logs_metrics_baseline_and_artifacts(classify_run):
    run, client = classify_run["run"], classify_run["client"]
    m = run.data.metrics
    assert run.info.status == "FINISHED"
    assert m["test/baseline/majority_accuracy"] == pytest.approx(5 / 15)  # 5 of each class
    assert 0 <= m["test/accuracy"] <= 1 and 0 <= m["test/macro_f1"] <= 1
    assert "val/accuracy" in m and "val/macro_f1" in m
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    samples = {a.path for a in client.list_artifacts(run.info.run_id, "samples")}
    assert "plots/confusion_test.png" in plots and "samples/test_predictions.csv" in samples
    contexts = sorted(i.tags[0].value for i in run.inputs.dataset_inputs)
    assert contexts == ["test", "train", "validation"]


@pytest.mark.slow
def test_classify_run_beats_the_majority_class(tmp_path, empty_store):
    found = train_classify(tmp_path, empty_store, n=150, epochs=10)
    m = found["run"].data.metrics
    assert m["test/accuracy"] > m["test/baseline/majority_accuracy"] + 0.2


def test_rnnlab_forecast_refuses_a_classify_run_naming_the_task_it_needs(classify_run, tmp_path):
    path = tmp_path / "new.csv"
    pd.DataFrame(classify_run["x"][:6]).to_csv(path, index=False)
    run_id = classify_run["run"].info.run_id
    args = ("forecast", run_id, "--data", str(path), "--uri", classify_run["uri"])
    result = cli_inprocess(*args, "--out", str(tmp_path / "f.csv"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"Run {run_id} is a 'classify' run, not a forecasting run" in result.stderr
    assert "task=forecast (rnnlab runs -e forecast)" in result.stderr
    assert not (tmp_path / "f.csv").exists()


def test_rnnlab_predict_labels_new_sequences(classify_run, tmp_path):
    x = classify_run["x"][:6]
    path = tmp_path / "new.csv"
    pd.DataFrame(x).to_csv(path, index=False)  # wide, header, no label column
    result = cli_inprocess(
        "predict",
        classify_run["run"].info.run_id,
        "--data",
        str(path),
        "--uri",
        classify_run["uri"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr  # any layout; the label column may be absent
    assert len(result.stdout.strip().splitlines()) == 7
    ts = write_ts(tmp_path / "new.ts", x, ["-1"] * 6)
    result = cli_inprocess(
        "predict",
        classify_run["run"].info.run_id,
        "--data",
        str(ts),
        "--uri",
        classify_run["uri"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "id,label" and len(lines) == 7
    assert {line.split(",")[1] for line in lines[1:]} <= set(LABELS)


@pytest.mark.parametrize(
    "preset,corpus", [("classify_demo", "gunpoint"), ("classify_ecg5000", "ecg5000")]
)
def test_each_classify_preset_reads_the_archive_split_its_manifest_names(preset, corpus):
    from conftest import compose

    from rnnlab.data.fetch import load_manifest

    cfg = compose([f"experiment={preset}"])
    files = {entry.name: entry for entry in load_manifest(corpus).files}
    assert cfg.task.train.split("/") == [corpus, next(n for n in files if "TRAIN" in n)]
    assert cfg.task.test.split("/") == [corpus, next(n for n in files if "TEST" in n)]
    assert all(len(e.sha256) == 64 and e.member for e in files.values())  # verified extracts
