"""Rebuild a run from its MLflow artifacts: the checkpoint to resume from, or a finished
run's task and model for ``rnnlab eval``, ``generate`` and ``translate``.

The run's resolved config travels inside its checkpoint, so the same composition that
trained the model (:func:`rnnlab.compose.compose`) rebuilds it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rnnlab.compose import compose
from rnnlab.errors import ConfigError
from rnnlab.tasks.base import Task
from rnnlab.tracking.store import connect, download_checkpoint, get_run, has_artifact
from rnnlab.train.checkpoint import load_checkpoint


@dataclass
class Restored:
    run: Any
    cfg: DictConfig
    task: Task
    model: Any
    checkpoint: dict[str, Any]
    device: Any


def resume_checkpoint(client: Any, run: Any) -> dict[str, Any]:
    """The latest checkpoint of an unfinished run whose lease this process holds, or a clear
    error. A run that stopped before its first checkpoint cannot resume: it is ended FAILED
    (it would otherwise stay RUNNING, or KILLED as if resumable, for ever)."""
    run_id, name = run.info.run_id, run.info.run_name
    if run.info.status == "FINISHED":
        raise ConfigError(
            f"resume={run_id}: run {name} already FINISHED",
            "Start a new run instead (drop resume=), e.g. with more trainer.max_epochs",
        )
    if not has_artifact(client, run_id, "checkpoints/last.pt"):
        reason = "stopped before its first checkpoint: nothing to resume from"
        client.set_tag(run_id, "failure_reason", reason)
        client.set_terminated(run_id, status="FAILED")
        raise ConfigError(
            f"resume={run_id}: run {name} {reason} (it was {run.info.status}; it is now "
            "marked FAILED)",
            "Start it again as a new run (the same command without resume=); a lower "
            "trainer.checkpoint_every_epochs checkpoints sooner",
        )
    with tempfile.TemporaryDirectory(prefix="rnnlab-resume-") as tmp:
        return load_checkpoint(download_checkpoint(client, run_id, "last", Path(tmp)))


def load_run(run_id: str, *, uri: str, which: str = "best", device: str | None = None) -> Restored:
    """The run's task and model with the ``which`` checkpoint loaded, in eval mode."""
    client = connect(uri)
    run = get_run(client, run_id, uri=uri, asked_as=f"Run '{run_id}'")
    with tempfile.TemporaryDirectory(prefix="rnnlab-restore-") as tmp:
        checkpoint = load_checkpoint(download_checkpoint(client, run_id, which, Path(tmp)))
    cfg = OmegaConf.create(checkpoint["config"])
    if device is not None:
        cfg.device = device
    spec = compose(cfg)
    task = spec.task
    task.load_state_dict(checkpoint.get("task_state") or {})
    task.to(spec.device)
    model = task.build_model(stack=spec.stack).to(spec.device)
    model.load_state_dict(checkpoint["model"])
    model.eval()
    return Restored(run, cfg, task, model, checkpoint, spec.device)
