"""Rebuild a finished run's task and model from its MLflow artifacts.

Used by ``rnnlab eval`` and by task commands such as ``generate`` and ``translate``. The
run's resolved ``config`` travels inside its checkpoint, so the same composition code that
trained the model rebuilds it.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rnnlab.errors import RnnlabError


@dataclass
class Restored:
    run: Any
    cfg: DictConfig
    task: Any
    model: Any
    checkpoint: dict[str, Any]
    device: Any


def download_checkpoint(client: Any, run_id: str, which: str, dst: Path) -> Path:
    """Fetch ``checkpoints/<which>.pt`` of ``run_id`` into ``dst``."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        return Path(client.download_artifacts(run_id, f"checkpoints/{which}.pt", str(dst)))
    except Exception as exc:
        raise RnnlabError(
            f"Run {run_id} has no checkpoints/{which}.pt artifact ({type(exc).__name__})",
            "Only runs that finished training have one; list runs with 'rnnlab runs'",
        ) from exc


def load_run(run_id: str, *, uri: str, which: str = "best", device: str | None = None) -> Restored:
    """The run's task and model with the ``which`` checkpoint loaded, in eval mode."""
    from rnnlab.app import compose
    from rnnlab.tracking.store import connect, get_run
    from rnnlab.train.checkpoint import load_checkpoint

    client = connect(uri)
    run = get_run(client, run_id, uri=uri, asked_as=f"Run '{run_id}'")
    with tempfile.TemporaryDirectory(prefix="rnnlab-restore-") as tmp:
        checkpoint = load_checkpoint(download_checkpoint(client, run_id, which, Path(tmp)))
    cfg = OmegaConf.create(checkpoint["config"])
    if device is not None:
        cfg.device = device
    parts = compose(cfg)
    task = parts.task
    task.load_state_dict(checkpoint.get("task_state") or {})
    task.to(parts.device)
    model = task.build_model(stack=parts.stack).to(parts.device)
    model.load_state_dict(checkpoint["model"])
    model.eval()
    return Restored(run, cfg, task, model, checkpoint, parts.device)
