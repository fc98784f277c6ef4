"""``rnnlab train rerun=RUN_ID [overrides]``: a new run from a past run's exact config.

The past run's resolved ``config.yaml`` artifact becomes Hydra's primary config (with
rnnlab's Hydra settings), so the command line's overrides apply to it exactly as they apply
to a fresh composition, and the new run is an ordinary Hydra job: outputs, sweeps (``-m``),
errors. The job sees ``rerun=RUN_ID`` and tags the new run ``rerun_of``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from rnnlab.errors import ConfigError, TrackingError
from rnnlab.tracking.store import connect, get_run
from rnnlab.tracking.uri import resolve_tracking_uri

PRIMARY = "rerun"


def value_of(overrides: list[str], key: str) -> str | None:
    """The last ``key=value`` among Hydra ``overrides`` (None where absent or null)."""
    values = [o.split("=", 1)[1] for o in overrides if o.startswith(f"{key}=")]
    return values[-1] if values and values[-1] not in ("", "null") else None


def past_config(run_id: str, uri: str) -> dict:
    """The resolved config a past run recorded (its ``config.yaml`` artifact)."""
    import yaml

    client = connect(uri)
    get_run(client, run_id, uri=uri, asked_as=f"rerun={run_id}")
    with tempfile.TemporaryDirectory(prefix="rnnlab-rerun-") as tmp:
        try:
            path = client.download_artifacts(run_id, "config.yaml", tmp)
        except Exception as exc:
            raise TrackingError(
                f"rerun={run_id}: the run has no config.yaml artifact to rerun from "
                f"({type(exc).__name__})",
                "Rerun a run that finished writing its artifacts, or continue an interrupted "
                "one with resume=RUN_ID",
            ) from exc
        config = yaml.safe_load(Path(path).read_text())
    if not isinstance(config, dict):
        raise ConfigError(f"rerun={run_id}: its config.yaml is not a config", None)
    return config


def rerun_arguments(overrides: list[str]) -> list[str]:
    """Hydra's ``--config-dir/--config-name`` that compose from the past run's config, when
    ``rerun=RUN_ID`` is among ``overrides``; else nothing."""
    import yaml

    run_id = value_of(overrides, "rerun")
    if run_id is None:
        return []
    if value_of(overrides, "resume") is not None:
        raise ConfigError(
            "rerun= and resume= were both given",
            "Use resume=RUN_ID to continue a run, or rerun=RUN_ID to start a new one from it",
        )
    config = past_config(run_id, resolve_tracking_uri(value_of(overrides, "tracking.uri")))
    config.update(rerun=run_id, resume=None)
    folder = Path(tempfile.mkdtemp(prefix="rnnlab-rerun-"))
    primary = {"defaults": ["hydra_settings", "_self_"], **config}
    (folder / f"{PRIMARY}.yaml").write_text(yaml.safe_dump(primary, sort_keys=False))
    return ["--config-dir", str(folder), "--config-name", PRIMARY]
