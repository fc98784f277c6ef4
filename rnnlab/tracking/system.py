"""MLflow's built-in system metrics (``system/*``: CPU, memory, disk, network, GPU).

MLflow samples them on its own thread every ``interval_s`` seconds and writes them to the run
(GPU utilisation and memory where ``nvidia-ml-py`` finds an NVIDIA GPU). A run shorter than one
interval records none: the monitor publishes after each full interval.
"""

from __future__ import annotations

import logging
from collections.abc import Callable


def start_system_metrics(
    *, uri: str, run_id: str, interval_s: float, resumed: bool
) -> Callable[[], None]:
    """Start sampling for ``run_id``; returns the function that stops it (idempotent)."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    # MLflow logs "Started monitoring system metrics." at INFO per run: keep the console quiet
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    monitor = SystemMetricsMonitor(
        run_id, sampling_interval=interval_s, resume_logging=resumed, tracking_uri=uri
    )
    monitor.start()
    return monitor.finish
