"""Runs trained before ``task=lm`` existed: their checkpoints name ``rnnlab.tasks.ptb.PennTreebank``
with the old ``task.*`` keys. This reads those keys and builds the same language model on
the registered PTB, so ``rnnlab eval``, ``generate`` and ``resume=`` still work on them.
New runs of ``task=ptb`` use :class:`~rnnlab.tasks.lm.LanguageModelTask` (``conf/task/ptb.yaml``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from rnnlab.options import FRACTION, POSITIVE, Options, option
from rnnlab.tasks.lm import LanguageModelTask, LMOptions


@dataclass(frozen=True)
class PTBOptions(Options):
    """``task.*`` of a PTB run from before ``task=lm`` (no corpus, level or min_freq keys)."""

    section: ClassVar[str] = "task"

    batch_size: int = option(POSITIVE)
    bptt: int = option(POSITIVE)
    eval_batch_size: int = option(POSITIVE)
    vocab_size: int = option(POSITIVE)
    max_tokens: int | None = option(POSITIVE)
    embedding_size: int | None = option(POSITIVE)
    dropout: float = option(FRACTION)
    tie_weights: bool = option()
    init_range: float | None = option(POSITIVE)
    sum_over_time: bool = option()
    data_dir: str | None = option()


class PennTreebank(LanguageModelTask):
    """The language model on the registered PTB, built from a pre-``lm`` run's options."""

    name: ClassVar[str] = "ptb"
    Options = PTBOptions
    backfill: ClassVar[dict[str, Any]] = {}  # PTBOptions has none of lm's later keys

    def __init__(self, options: PTBOptions) -> None:
        words = {
            "corpus": "ptb",
            "train": None,
            "valid": None,
            "test": None,
            "valid_fraction": None,
        }
        older = {"level": "word", "min_freq": 1, "cache_dir": None}  # cache: the default root
        # before the adaptive softmax
        older |= {"softmax": "full", "cutoffs": None, "div_value": 4.0, "head_bias": False}
        super().__init__(LMOptions(**words, **older, **asdict(options)))
