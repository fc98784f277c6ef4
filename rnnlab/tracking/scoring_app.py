"""The app ``rnnlab serve`` runs under uvicorn (``rnnlab.tracking.scoring_app:app``): MLflow's
scoring server, the one ``mlflow models serve`` runs (``mlflow.pyfunc.scoring_server``), on
the model folder in ``$RNNLAB_SERVE_MODEL``, loaded with the model config MLflow's own
variable carries (the device). One layer more than MLflow's: every request is checked as
sent (:func:`rnnlab.tracking.scoring.guard`). Each uvicorn worker imports this module, so
each loads the model once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from mlflow.pyfunc import scoring_server

from rnnlab.tasks.base import ServingSchema
from rnnlab.tracking.scoring import MODEL_VAR, THREADS_VAR, guard
from rnnlab.tracking.serving import SERVING_FILE

# before the model loads: its config may not know "threads" (logged by an older rnnlab)
torch.set_num_threads(int(os.environ.get(THREADS_VAR, torch.get_num_threads())))
folder = Path(os.environ[MODEL_VAR])
schema = ServingSchema(**json.loads((folder / SERVING_FILE).read_text(encoding="utf-8")))
app = scoring_server.init(scoring_server.load_model_with_mlflow_config(str(folder)))
guard(app, schema)
