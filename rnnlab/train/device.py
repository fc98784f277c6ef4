"""Device choice and seeding."""

from __future__ import annotations

import random

import numpy as np
import torch

from rnnlab.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device={name} was asked for, but this machine has no CUDA GPU visible to torch "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'})",
            "Use device=cpu or device=auto, or install a CUDA build of torch (README, 'GPU')",
        )
    if name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"Unknown device '{name}'", "Use device=auto, device=cpu or device=cuda")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
