"""The benchmarks that drive rnnlab's training step themselves (not through ``fit``) still
run it: ``scripts/bench_lm_vocab.py`` trains epoch by epoch with validation in between, and
broke when the step came to need the epoch's set-up (``Fit.start_epoch``) that ``fit`` does."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


@pytest.mark.slow  # make test-all: a benchmark script, not the product
def test_bench_lm_vocab_trains_through_rnnlabs_step_epoch_by_epoch(shared_data, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    from bench_lm_vocab import RnnlabSide

    side = RnnlabSide(["experiment=ptb_tiny"])
    first = side.epoch(target=1e9, budget=math.inf)  # any perplexity reaches 1e9
    assert first["reached"] is not None and first["tokens"] > 0
    second = side.epoch(target=None, budget=math.inf)
    assert second["ppl"] < first["ppl"]  # it learns: the second epoch starts from the first
    assert side.progress.step > 0 and side.progress.epoch == 3
    assert side.steps(1_200)["tokens_per_s"] > 0  # tokens: 3 windows of ptb_tiny or more
    sys.modules.pop("bench_lm_vocab", None)
