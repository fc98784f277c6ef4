"""translate on any parallel corpus: a folder of plain or gzip files read and fingerprinted,
sentencepiece subwords end to end on multi30k_tiny (no ``<unk>``, the model travels with the
run), chrF, and ``rnnlab eval --src/--ref`` checked against sacreBLEU's own command line."""

from __future__ import annotations

import base64
import gzip
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_inprocess, fixture_datasets_dir, new_store, runs_of, task_from_config

N = {"train": 60, "val": 8, "test": 8}
MULTI30K = {"train": "train", "val": "val", "test": "test_2016_flickr"}


def multi30k_lines(name: str, lang: str, n: int) -> list[str]:
    root = fixture_datasets_dir()
    with gzip.open(root / "multi30k" / f"{name}.{lang}.gz", "rt", encoding="utf-8") as f:
        return [next(f).strip() for _ in range(n)]


def write_folder(folder: Path, stems: dict[str, str], *, gz: set[str] = frozenset()) -> Path:
    """A parallel folder from the first lines of Multi30k; files named in ``gz`` gzipped."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, stem in stems.items():
        for lang in ("de", "en"):
            text = "".join(f"{line}\n" for line in multi30k_lines(MULTI30K[split], lang, N[split]))
            name = f"{stem}.{lang}"
            if name in gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(text.encode()))
            else:
                (folder / name).write_text(text, encoding="utf-8")
    return folder


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("gz", [set(), {"train.de", "valid.en", "test.de", "test.en"}])
def test_a_folder_of_plain_or_gzip_files_reads_like_the_corpus(tmp_path, gz):
    folder = write_folder(
        tmp_path / "corpus", {"train": "train", "val": "valid", "test": "test"}, gz=gz
    )
    task = task_from_config("translate", corpus=str(folder), min_freq=1)
    for split in ("train", "val", "test"):
        src, tgt = task.read_split(split)
        assert src == multi30k_lines(MULTI30K[split], "de", N[split])
        assert tgt == multi30k_lines(MULTI30K[split], "en", N[split])
    task.ensure_vocab()
    assert len(task.split("train").src_ids) == N["train"]
    # each split's digest is the sha256 of its two files, whatever their compression
    sources = task.data_sources()
    assert [s.split for s in sources] == ["train", "validation", "test"]
    suffix = {name: ".gz" if name in gz else "" for name in ("train.de", "train.en")}
    files = [folder / f"train.{lang}{suffix[f'train.{lang}']}" for lang in ("de", "en")]
    expected = hashlib.sha256(f"{sha256(files[0])}\n{sha256(files[1])}".encode()).hexdigest()
    assert sources[0].digest == expected
    assert sources[0].source == f"{files[0]} {files[1]}"


def test_split_file_names_can_be_set(tmp_path):
    folder = write_folder(tmp_path / "m30k", MULTI30K)
    names = {f"split_names.{split}": stem for split, stem in MULTI30K.items()}
    task = task_from_config("translate", corpus=str(folder), **names)
    assert task.read_split("test")[1] == multi30k_lines("test_2016_flickr", "en", N["test"])


# -- sentencepiece end to end --------------------------------------------------------------
@pytest.fixture(scope="module")
def spm_run(tmp_path_factory, empty_store) -> dict:
    """One multi30k_tiny run with sentencepiece subwords (a joint BPE of 500 pieces)."""
    root = fixture_datasets_dir()
    work = tmp_path_factory.mktemp("spm")
    uri = new_store(work, empty_store)
    env = {"RNNLAB_DATA": str(root), "RNNLAB_CACHE": str(work / "cache")}
    overrides = ["task.tokenizer=sentencepiece", "task.spm.vocab_size=500", "device=cpu"]
    result = cli_inprocess(
        "train", "experiment=multi30k_tiny", *overrides, f"tracking.uri={uri}", cwd=work, env=env
    )
    assert result.returncode == 0, result.stderr
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    (run,) = runs_of(client, "translate")
    return {"run": run, "client": client, "uri": uri, "work": work, "env": env}


def test_subwords_leave_no_unk_and_the_model_travels_with_the_run(spm_run):
    client, run, work = spm_run["client"], spm_run["run"], spm_run["work"]
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"
    assert {"test/bleu", "test/chrf", "val/chrf"} <= set(run.data.metrics)
    assert run.data.metrics["test/unk"] == 0.0
    assert run.data.tags["sacrebleu_chrf"].startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0")
    tsv = Path(client.download_artifacts(run_id, "samples/translations_test.tsv", str(work)))
    hypotheses = [row.split("\t")[2] for row in tsv.read_text("utf-8").splitlines()[1:]]
    assert len(hypotheses) == 30 and any(hypotheses)
    assert not any("<unk>" in h or "\u2047" in h for h in hypotheses)  # nor spm's " ⁇ "
    # the model is an artifact and inside the checkpoint, the same bytes; it was cached
    model = Path(client.download_artifacts(run_id, "tokenizer/spm.model", str(work)))
    import torch

    ckpt = Path(client.download_artifacts(run_id, "checkpoints/best.pt", str(work)))
    state = torch.load(ckpt, weights_only=True)["task_state"]
    assert base64.b64decode(state["src_spm"]["spm"]) == model.read_bytes()
    assert [p.read_bytes() for p in (work / "cache" / "spm").glob("*.model")] == [
        model.read_bytes()
    ]
    # characters never seen in training still encode (byte fallback) and decode back
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model))
    odd = "Ein Åsmund trinkt Kaffee ☕ in Zürich."
    assert 1 not in sp.encode(odd) and sp.decode(sp.encode(odd)) == odd
    # translate needs neither the corpus nor the cache
    nowhere = {"RNNLAB_DATA": str(work / "nowhere"), "RNNLAB_CACHE": str(work / "nocache")}
    one = cli_inprocess("translate", run_id, odd, "--uri", spm_run["uri"], cwd=work, env=nowhere)
    assert one.returncode == 0, one.stderr
    assert one.stdout.strip() and "<unk>" not in one.stdout and "\u2047" not in one.stdout


def sacrebleu_cli(ref: Path, hyp: Path, metric: str) -> float:
    command = [sys.executable, "-m", "sacrebleu", str(ref), "-i", str(hyp), "-m", metric]
    done = subprocess.run([*command, "-b", "-w", "4"], capture_output=True, text=True, check=True)
    return float(done.stdout.strip())


def test_eval_on_new_files_equals_sacrebleu_on_translate_output(spm_run):
    client, run_id, work, uri = (
        spm_run["client"],
        spm_run["run"].info.run_id,
        spm_run["work"],
        spm_run["uri"],
    )
    src, ref, hyp = work / "flickr.de", work / "flickr.en", work / "flickr.hyp"
    src.write_text("".join(f"{s}\n" for s in multi30k_lines("val", "de", 40)), encoding="utf-8")
    ref.write_text("".join(f"{s}\n" for s in multi30k_lines("val", "en", 40)), encoding="utf-8")
    nowhere = {"RNNLAB_DATA": str(work / "nowhere")}
    done = cli_inprocess(
        "translate", run_id, "--uri", uri, cwd=work, env=nowhere, stdin=src.read_text("utf-8")
    )
    assert done.returncode == 0, done.stderr
    hyp.write_text(done.stdout, encoding="utf-8")
    result = cli_inprocess(
        "eval", run_id, "--src", str(src), "--ref", str(ref), "--uri", uri, cwd=work, env=nowhere
    )
    assert result.returncode == 0, result.stderr
    bleu, chrf = sacrebleu_cli(ref, hyp, "bleu"), sacrebleu_cli(ref, hyp, "chrf")
    assert result.stdout.splitlines() == [
        f"eval/flickr/bleu: {bleu:.2f}",
        f"eval/flickr/chrf: {chrf:.2f}",
    ]
    logged = client.get_run(run_id)
    assert logged.data.metrics["eval/flickr/bleu"] == pytest.approx(bleu, abs=1e-4)
    assert logged.data.metrics["eval/flickr/chrf"] == pytest.approx(chrf, abs=1e-4)
    assert logged.data.metrics["eval/flickr/unk"] == 0.0
    assert logged.info.status == "FINISHED"
    (dataset,) = [d for d in logged.inputs.dataset_inputs if d.dataset.name == "eval-flickr"]
    pair = hashlib.sha256(f"{sha256(src)}\n{sha256(ref)}".encode()).hexdigest()
    assert dataset.dataset.digest == pair[:36]
    assert [t.value for t in dataset.tags] == ["eval"]
