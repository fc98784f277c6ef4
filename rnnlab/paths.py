"""Where rnnlab finds its Hydra configs, for an editable install and for a wheel."""

from __future__ import annotations

from pathlib import Path


def config_dir() -> Path:
    """The directory holding ``train.yaml`` and the config groups.

    A wheel carries the repository's top-level ``conf/`` as ``rnnlab/conf``; an editable
    install (or a source checkout) reads the top-level ``conf/`` directly.
    """
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"rnnlab's configs are missing: no conf/train.yaml next to {here}")
