"""The ``corpus`` tier (``make test-all``): the real PTB and Multi30k, where they are present.

``make test`` runs every code path on the fixture corpora (tests/fixtures); what only the real
corpora can show lives here: their published checksums, and the tiny presets learning on the
real text. They skip, saying how to get the corpora, where they are absent
(``rnnlab data fetch ptb``, ``rnnlab data fetch multi30k``, or ``RNNLAB_DATA=DIR``)."""

from __future__ import annotations

import pytest
from conftest import cli_inprocess, new_store, runs_of

from rnnlab.data.fetch import corpus_file, load_manifest, sha256_of

pytestmark = pytest.mark.corpus


@pytest.mark.parametrize("name", ["ptb", "multi30k"])
def test_real_corpora_match_their_published_sha256(real_data, name):
    manifest = load_manifest(name)
    assert "raw.githubusercontent.com" in manifest.files[0].url
    for entry in manifest.files:
        path = corpus_file(name, entry.name)  # raises on a missing or corrupt file
        assert path == (real_data / name / entry.name).resolve()
        assert sha256_of(path) == entry.sha256


@pytest.mark.parametrize(
    ("preset", "experiment", "metric", "bound"),
    [("ptb_tiny", "ptb", "val/ppl", 250.0), ("multi30k_tiny", "translate", "val/loss", 7.0)],
)
def test_tiny_presets_learn_on_the_real_corpora(
    real_data, workdir, empty_store, preset, experiment, metric, bound
):
    uri = new_store(workdir, empty_store)
    result = cli_inprocess(
        "train", f"experiment={preset}", "device=cpu", f"tracking.uri={uri}", cwd=workdir
    )
    assert result.returncode == 0, result.stderr
    from mlflow.tracking import MlflowClient

    (run,) = runs_of(MlflowClient(tracking_uri=uri), experiment)
    assert run.info.status == "FINISHED"
    assert run.data.metrics[metric] < bound
