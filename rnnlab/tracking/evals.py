"""Figures of a later evaluation (``rnnlab eval``) written to a finished run.

Metrics are logged at step 0 under their full keys (``eval/NAME/bleu``); the files scored
become one MLflow dataset input with the context ``eval`` (:mod:`rnnlab.tracking.inputs`,
its digest the first 36 hex digits of the sha256, the profile all of it).
"""

from __future__ import annotations

import time

from rnnlab.tasks.base import DataSource
from rnnlab.tracking.inputs import EVAL_DIGEST_CHARS, log_data_sources
from rnnlab.tracking.store import connect


def log_evaluation(uri: str, run_id: str, *, metrics: dict[str, float], data: DataSource) -> None:
    """Log ``metrics`` and the dataset ``data`` to run ``run_id`` (its status unchanged)."""
    from mlflow.entities import Metric

    client = connect(uri)
    stamp = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, stamp, 0) for k, v in metrics.items()])
    log_data_sources(client, run_id, [data], digest_chars=EVAL_DIGEST_CHARS)
