"""Typed option groups: one frozen dataclass per config section, validated in one place.

A section's dataclass declares each key once, with its type and, in the field's metadata, the
rule its value must satisfy (:data:`POSITIVE`, :data:`FRACTION`, :func:`one_of`, ...). It holds
no defaults: those live in the YAML under ``conf/``, the single source of defaults, and
:mod:`rnnlab.compose` reads a composed section into the dataclass (types are checked there).
Construction runs :meth:`Options.__post_init__`, which refuses non-finite numbers and values
that break a rule with a message naming the key, e.g. ``task.bptt must be a positive integer,
got 0``. Cross-key rules go in :meth:`Options.check`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar


@dataclass(frozen=True)
class Rule:
    """A constraint on one value: ``test(value)`` must hold; ``says`` completes "must be ..."."""

    test: Callable[[Any], bool]
    says: str
    #: what it says for an integer field, where that reads better ("a positive integer")
    says_int: str | None = None


POSITIVE = Rule(lambda v: v > 0, "positive", "a positive integer")
NON_NEGATIVE = Rule(lambda v: v >= 0, "non-negative (0 or more)")
#: a probability that may not be 1 (dropout, zoneout, label smoothing)
FRACTION = Rule(lambda v: 0.0 <= v < 1.0, "in [0, 1)")
#: a probability that may be 1 (teacher forcing)
PROBABILITY = Rule(lambda v: 0.0 <= v <= 1.0, "in [0, 1]")


def one_of(*choices: str) -> Rule:
    return Rule(lambda v: v in choices, f"one of {', '.join(choices)}")


def option(rule: Rule | None = None, *, help: str = "") -> Any:
    """A dataclass field with no default, carrying its rule (and a one-line help)."""
    return field(metadata={"rule": rule, "help": help})


@dataclass(frozen=True)
class Options:
    """Base of every option group; subclasses set :attr:`section` (``task``, ``trainer``;
    empty for the top-level keys)."""

    section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            key = f"{self.section}.{spec.name}" if self.section else spec.name
            values = value if isinstance(value, list | tuple) else [value]
            for item in values:
                if isinstance(item, float) and not math.isfinite(item):
                    raise ValueError(f"{key} must be a finite number, got {item}")
            rule: Rule | None = spec.metadata.get("rule")
            if rule is None or value is None:
                continue
            for item in values:
                if not rule.test(item):
                    integral = isinstance(item, int) and rule.says_int is not None
                    says = rule.says_int if integral else rule.says
                    raise ValueError(f"{key} must be {says}, got {item!r}")
        self.check()

    def check(self) -> None:
        """Rules that involve several keys; raise ``ValueError`` naming them."""
