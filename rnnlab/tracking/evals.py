"""Figures of a later evaluation (``rnnlab eval``) written to a finished run.

Metrics are logged at step 0 under their full keys (``eval/NAME/bleu``); the files scored
become one MLflow dataset input with the context ``eval``. MLflow stores a dataset digest in
36 characters, so the digest field holds the first 36 hex digits of the sha256 and the
profile holds all of it.
"""

from __future__ import annotations

import json
import time

from rnnlab.tasks.base import DataSource
from rnnlab.tracking.inputs import log_inputs
from rnnlab.tracking.store import connect

#: MLflow's column width for a dataset digest
DIGEST_CHARS = 36


def log_evaluation(uri: str, run_id: str, *, metrics: dict[str, float], data: DataSource) -> None:
    """Log ``metrics`` and the dataset ``data`` to run ``run_id`` (its status unchanged)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag, Metric
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    client = connect(uri)
    stamp = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, stamp, 0) for k, v in metrics.items()])
    dataset = Dataset(
        name=data.name,
        digest=data.digest[:DIGEST_CHARS],
        source_type="local",
        source=json.dumps({"uri": data.source}),
        profile=json.dumps({"sha256": data.digest}),
    )
    context = InputTag(key=MLFLOW_DATASET_CONTEXT, value=data.split)
    log_inputs(client, run_id, [DatasetInput(dataset=dataset, tags=[context])])
