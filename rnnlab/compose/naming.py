"""How a run is named and flattened for MLflow: ``lstm-rmsprop-lr1e-3`` and dotted params."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf


def flatten(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as ``{"optim.lr": 0.001, ...}`` for MLflow params."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, child in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), child)
        else:
            out[prefix] = value

    walk("", OmegaConf.to_container(cfg, resolve=True))
    return out


def format_lr(lr: float) -> str:
    """1e-3 -> '1e-3', 0.0025 -> '2.5e-3', 0.5 -> '0.5'."""
    if 0.01 <= abs(lr) < 1000:
        return f"{lr:g}"
    mantissa, exponent = f"{lr:.3e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def run_name(*, cell: str, optim: str, lr: float) -> str:
    """``<cell>-<optimizer>-lr<lr>``: what ran, readable in the MLflow UI."""
    return f"{cell}-{optim}-lr{format_lr(lr)}"
