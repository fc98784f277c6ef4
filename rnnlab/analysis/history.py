"""Metric histories of finished runs, read with ``MlflowClient``, for plots."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rnnlab.errors import RnnlabError


@dataclass
class RunInfo:
    """One run as the plots need it: id, readable label, params, and the client to read it."""

    run_id: str
    name: str
    params: dict[str, str]
    metrics: dict[str, float]
    client: Any
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.run_id[:8]})"

    def history(self, key: str) -> list[tuple[int, float]]:
        """(step, value) points of metric ``key``, in step order; a clear error if absent."""
        points = self.client.get_metric_history(self.run_id, key)
        if not points:
            known = ", ".join(sorted(self.metrics)) or "none"
            raise RnnlabError(
                f"Run {self.run_id} ({self.name}) has no metric '{key}'",
                f"Choose one it logged: {known}",
            )
        return sorted((m.step, m.value) for m in points)


def load_runs(run_ids: Sequence[str], *, uri: str) -> list[RunInfo]:
    """The runs ``run_ids`` from the store at ``uri`` (a clear error for an unknown id)."""
    from rnnlab.tracking.store import connect, get_run

    if not run_ids:
        raise RnnlabError("No run ids given", "List run ids with 'rnnlab runs -c run_id,run_name'")
    client = connect(uri)
    runs = []
    for run_id in run_ids:
        run = get_run(client, run_id, uri=uri, asked_as=f"Run '{run_id}'")
        runs.append(
            RunInfo(
                run_id=run.info.run_id,
                name=run.info.run_name or run.info.run_id[:8],
                params=dict(run.data.params),
                metrics=dict(run.data.metrics),
                client=client,
                tags=dict(run.data.tags),
            )
        )
    return runs


def default_output(kind: str, runs: Sequence[RunInfo], metric: str | None = None) -> str:
    """``plot-train_loss-1a2b3c4d+2.png``: what, which metric, first run, how many more."""
    parts = [kind]
    if metric:
        parts.append(metric.replace("/", "_"))
    parts.append(runs[0].run_id[:8] + (f"+{len(runs) - 1}" if len(runs) > 1 else ""))
    return "-".join(parts) + ".png"
