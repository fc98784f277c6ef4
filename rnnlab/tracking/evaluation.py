"""Figures computed after training (``rnnlab eval``), written to the run they score."""

from __future__ import annotations

import time

from rnnlab.tasks.base import DataSource, EvalResult
from rnnlab.tracking.inputs import EVAL_DIGEST_CHARS, log_data_sources
from rnnlab.tracking.store import connect


def record_evaluation(uri: str, run_id: str, result: EvalResult, source: DataSource) -> None:
    """``result``'s metrics and tags, and ``source`` as a dataset input, on run ``run_id``
    (a finished run stays FINISHED: MLflow lets a client add to it)."""
    from mlflow.entities import Metric, RunTag

    client = connect(uri)
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, 0) for k, v in result.metrics.items()]
    tags = [RunTag(k, v) for k, v in result.tags.items()]
    client.log_batch(run_id, metrics=metrics, tags=tags)
    log_data_sources(client, run_id, [source], digest_chars=EVAL_DIGEST_CHARS)
