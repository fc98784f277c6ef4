"""A task's data as MLflow dataset inputs of a run: name, digest, source, split context.

MLflow keeps a dataset's digest in at most 36 characters, so the digest is the first 36 hex
digits of the sha256 (144 bits: no two files of one corpus collide), and the full sha256 is
in the dataset's profile. The context tag (``mlflow.data.context``) says how the run used
it: ``train``, ``validation``, ``test``, or ``evaluation`` for a file scored after training
(``rnnlab eval --text``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from rnnlab.tasks.base import DataSource
from rnnlab.tracking.inputs import log_inputs

#: MLflow's limit on a dataset digest (mlflow.utils.validation.MAX_DATASET_DIGEST_SIZE)
DIGEST_CHARS = 36


def dataset_input(source: DataSource) -> Any:
    """``source`` as an MLflow DatasetInput tagged with its context."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    remote = source.source.startswith(("http://", "https://"))
    dataset = Dataset(
        name=source.name,
        digest=source.digest[:DIGEST_CHARS],
        source_type="http" if remote else "local",
        source=json.dumps({"url" if remote else "uri": source.source}),
        profile=json.dumps({"sha256": source.digest}),
    )
    return DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, source.split)])


def log_data_sources(client: Any, run_id: str, sources: Iterable[DataSource]) -> None:
    """Record ``sources`` as dataset inputs of run ``run_id``."""
    log_inputs(client, run_id, [dataset_input(s) for s in sources])
