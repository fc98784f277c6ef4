"""A preset's published reference: the figure it reproduces, shown beside the result.

A preset may carry a ``reference:`` block (metric, value, source, optional tolerance). The
run records it as tags (``reference.*``), so ``rnnlab runs`` can show it, and the summary
prints the result beside it with the relative difference.

A figure holds for the data it was measured on: ``when`` names the config values it assumes
(``task.data: etth1``), and a run that changes one (the preset on a user's own table) is not
compared with it; the summary says why instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, ClassVar

from rnnlab.options import POSITIVE, Options, option


@dataclass(frozen=True)
class Reference(Options):
    """``reference.*``: a published figure a preset reproduces."""

    section: ClassVar[str] = "reference"

    #: the metric compared, e.g. ``test/ppl`` or ``train/loss``
    metric: str = option()
    value: float = option()
    #: the paper or seed and its year, e.g. ``Zaremba et al. 2014``
    source: str = option()
    #: the relative difference still counted as reproduced (0.05: 5%); None: not stated
    tolerance: float | None = option(POSITIVE)
    #: the config values the figure was measured under, e.g. ``{task.data: etth1}``; None:
    #: it holds for any run of the preset
    when: dict[str, Any] | None = field(default=None, metadata={"rule": None, "help": ""})

    def differs(self, cfg: Any) -> str | None:
        """``task.data=sales.csv``: the first ``when`` key this run's config changes, or None
        where the figure holds. A file named for the data set (``ETTh1.csv``, the user's own
        copy of ``etth1``) is the same data."""
        from omegaconf import OmegaConf

        for key, value in (self.when or {}).items():
            actual = OmegaConf.select(cfg, key)
            if not same_data(actual, value):
                return f"{key}={actual}"
        return None

    def not_compared(self, differs: str) -> str:
        """The summary line of a run the figure does not hold for."""
        holds = ", ".join(f"{k}={v}" for k, v in (self.when or {}).items())
        return (
            f"reference {self.describe()} holds for {holds}; not compared: this run has {differs}"
        )

    def tags(self) -> dict[str, str]:
        tags = {
            "reference.metric": self.metric,
            "reference.value": f"{self.value:g}",
            "reference.source": self.source,
        }
        if self.tolerance is not None:
            tags["reference.tolerance"] = f"{self.tolerance:g}"
        return tags

    def describe(self) -> str:
        """``test/ppl 114.5 (Zaremba et al. 2014)``."""
        return f"{self.metric} {self.value:g} ({self.source})"

    def beside(self, result: float) -> str:
        """``test/ppl 112.11 (reference 114.5, Zaremba et al. 2014: -2.1%)``."""
        diff = relative_difference(result, self.value)
        verdict = ""
        if self.tolerance is not None:
            verdict = ", within tolerance" if abs(diff) <= self.tolerance else ", outside tolerance"
        return (
            f"{self.metric} {result:.6g} (reference {self.value:g}, {self.source}: "
            f"{diff * 100:+.1f}%{verdict})"
        )


def relative_difference(result: float, reference: float) -> float:
    """(result - reference) / |reference|; 0 where the reference is 0 and the result too."""
    if reference == 0:
        return 0.0 if result == 0 else float("inf")
    return (result - reference) / abs(reference)


def same_data(actual: Any, expected: Any) -> bool:
    """Equal, or a path whose file name without suffix is ``expected`` in any case."""
    if actual == expected:
        return True
    return isinstance(actual, str) and PurePath(actual).stem.lower() == str(expected).lower()


def read_reference(node: Any) -> Reference | None:
    """The ``reference`` block of a composed config, or None where the preset has none."""
    from rnnlab.compose.read import plain, read_options

    if node is None:
        return None
    data = dict(plain(node))
    data.setdefault("tolerance", None)  # optional: most papers state no tolerance
    data.setdefault("when", None)
    return read_options(Reference, data)
