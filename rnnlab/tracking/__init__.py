"""MLflow tracking. The only package that imports mlflow, and only when a run starts."""

from rnnlab.tracking.uri import resolve_tracking_uri

__all__ = ["resolve_tracking_uri"]
