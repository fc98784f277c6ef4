"""Reading a composed config section into its typed options, with errors that name the key."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rnnlab.errors import ConfigError
from rnnlab.options import Options

OptionsT = TypeVar("OptionsT", bound=Options)

#: Hydra's instantiation keys and the group's own name are not options
NOT_OPTIONS = ("_target_", "_partial_", "_recursive_", "_convert_", "name")
SHOWS_CONFIG = "rnnlab train --cfg job shows them"


def plain(node: Any) -> Any:
    """A config node as plain, resolved Python containers."""
    if isinstance(node, DictConfig | ListConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node


def key_of(section: str, name: str) -> str:
    return f"{section}.{name}" if section else name


def fix_for(section: str) -> str:
    where = f"the {section}.* values" if section else "the top-level keys (seed, device, ...)"
    return f"Check {where} you set on the command line or in your YAML ({SHOWS_CONFIG})"


def read_options(cls: type[OptionsT], node: Any, *, drop: Iterable[str] = NOT_OPTIONS) -> OptionsT:
    """``node`` (a composed section) as a validated ``cls``; a ConfigError naming the key."""
    data: dict[str, Any] = dict(plain(node) or {})
    for key in drop:
        data.pop(key, None)
    section = cls.section
    known = [f.name for f in fields(cls)]
    unknown = [k for k in data if k not in known]
    if unknown:
        raise ConfigError(
            f"{key_of(section, unknown[0])} is not an option of {cls.__name__} "
            f"(its keys: {', '.join(known)})",
            fix_for(section),
        )
    missing = [k for k in known if k not in data]
    if missing:
        raise ConfigError(
            f"{key_of(section, missing[0])} has no value",
            f"Set it in the YAML of the {section or 'run'} or on the command line "
            f"({key_of(section, missing[0])}=...)",
        )
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), data))
    except OmegaConfBaseException as exc:
        full_key = getattr(exc, "full_key", None) or "?"
        reason = str(getattr(exc, "msg", exc)).splitlines()[0]
        raise ConfigError(
            f"Invalid {key_of(section, full_key)}: {reason}", fix_for(section)
        ) from exc
    except ValueError as exc:
        raise ConfigError(f"Invalid {section or 'run'} settings: {exc}", fix_for(section)) from exc


def non_finite(node: Any, prefix: str = "") -> list[str]:
    """``key=value`` of every NaN or infinite number anywhere under ``node``."""
    found: list[str] = []
    value = plain(node)
    if isinstance(value, Mapping):
        for key, child in value.items():
            found += non_finite(child, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list | tuple):
        for index, child in enumerate(value):
            found += non_finite(child, f"{prefix}[{index}]")
    elif isinstance(value, float) and not math.isfinite(value):
        found.append(f"{prefix}={value}")
    return found


def check_finite(cfg: Any) -> None:
    """Every number in a run's config is finite (``optim.lr=inf`` is a typo, not a setting)."""
    bad = non_finite(cfg)
    if bad:
        raise ConfigError(
            f"Non-finite value {bad[0]}: every number in a run's config must be finite",
            "Set a finite number (e.g. optim.lr=1e-3); null switches off the keys that "
            f"allow it, such as trainer.clip_grad_norm ({SHOWS_CONFIG})",
        )
