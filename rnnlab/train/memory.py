"""Running out of device memory, said as a user error: one paragraph naming the knobs.

A CUDA out-of-memory error is not a bug in rnnlab but a model, batch or precision too large
for the card. :func:`out_of_memory_explained` turns ``torch.OutOfMemoryError`` into an
:class:`OutOfMemory` (exit 2): the session then ends the run FAILED with every metric and
checkpoint already written kept, as for any failure (rnnlab.session.run).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import torch

from rnnlab.errors import RnnlabError

#: the part of torch's message worth repeating (the rest is allocator advice)
ASKED = re.compile(r"Tried to allocate [\d.]+ [KMGT]?i?B")


class OutOfMemory(RnnlabError):
    """The device ran out of memory while training or evaluating."""

    def __init__(self, *, device: torch.device, detail: str) -> None:
        super().__init__(
            f"The device {device} ran out of memory ({detail}); the run is marked FAILED, with "
            "the metrics and the last checkpoint saved so far kept",
            "Lower task.batch_size (activation memory grows with it), train in bfloat16 with "
            "trainer.precision=bf16 (about half the activation memory; CUDA compute capability "
            ">= 8.0), or use a smaller model (cell.hidden_size, cell.num_layers)",
        )


def detail_of(exc: BaseException) -> str:
    """``CUDA out of memory; tried to allocate 2.00 GiB`` from torch's long message."""
    text = str(exc)
    found = ASKED.search(text)
    head = text.split(".")[0].strip() or "out of memory"
    return f"{head}; {found.group(0)[0].lower()}{found.group(0)[1:]}" if found else head


@contextlib.contextmanager
def out_of_memory_explained(device: torch.device) -> Iterator[None]:
    """Within the block, ``torch.OutOfMemoryError`` becomes :class:`OutOfMemory`."""
    try:
        yield
    except torch.OutOfMemoryError as exc:
        raise OutOfMemory(device=device, detail=detail_of(exc)) from exc
