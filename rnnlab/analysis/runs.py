"""Runs as a pandas table, read with MLflow's own search API."""

from __future__ import annotations

import pandas as pd

from rnnlab.errors import RnnlabError

KEY_PARAMS = ("task.name", "cell.name", "optim.name", "optim.lr", "seed")
BASE_COLUMNS = ("run_id", "tags.mlflow.runName", "status", "experiment")


def runs_frame(*, uri: str, experiment: str | None = None, max_results: int = 1000) -> pd.DataFrame:
    """One row per run: name, status, key params and the last value of every metric."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from rnnlab.tracking.store import connect

    client: MlflowClient = connect(uri)
    if experiment is not None:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            names = sorted(e.name for e in client.search_experiments())
            raise RnnlabError(
                f"No experiment named '{experiment}' in {uri}",
                f"Known experiments: {', '.join(names) or 'none'}",
            )
        experiments = [found]
    else:
        experiments = client.search_experiments()
    if not experiments:
        return pd.DataFrame()
    mlflow.set_tracking_uri(uri)
    frame = mlflow.search_runs(
        experiment_ids=[e.experiment_id for e in experiments],
        max_results=max_results,
        output_format="pandas",
    )
    if frame.empty:
        return frame
    names = {e.experiment_id: e.name for e in experiments}
    frame["experiment"] = frame["experiment_id"].map(names)
    params = [f"params.{p}" for p in KEY_PARAMS if f"params.{p}" in frame.columns]
    metrics = sorted(c for c in frame.columns if c.startswith("metrics."))
    columns = [c for c in BASE_COLUMNS if c in frame.columns] + params + metrics
    table = frame[columns].rename(
        columns=lambda c: (
            "run_name"
            if c == "tags.mlflow.runName"
            else c.split(".", 1)[-1]
            if c.startswith(("params.", "metrics."))
            else c
        )
    )
    return table.reset_index(drop=True)


def format_runs(frame: pd.DataFrame, *, fmt: str = "table") -> str:
    """Render the runs table as text, CSV or JSON records."""
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "json":
        return frame.to_json(orient="records", indent=2)
    if frame.empty:
        return "no runs"
    return frame.to_string(index=False, float_format=lambda v: f"{v:.6g}")
