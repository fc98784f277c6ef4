"""glibc's allocator, tuned for training on the CPU (applied by ``rnnlab train``).

PyTorch's CPU tensors come from ``malloc``. glibc serves large blocks with fresh ``mmap``'d
pages and, by default, gives freed memory at the top of the heap back to the kernel, so a
training step that allocates and frees the same large activations every window (a PTB
window's logits are 700 x 10000 floats, 28 MB) page-faults through all of them again, and
the run spends a large share of its CPU time in the kernel (figures: docs/benchmarks.md,
"Allocator tuning"). Fixing the mmap threshold at its 32 MiB maximum and raising the trim
threshold to 1 GiB keeps freed blocks in the heap for the next step; this is what preloading
jemalloc or tcmalloc does in PyTorch's CPU performance guides, without a dependency.

It is a process-wide setting, applied once; ``RNNLAB_MALLOC_TUNING=0`` leaves malloc alone.
Elsewhere than glibc on Linux it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024**2  # glibc's upper limit for it on 64-bit systems
TRIM_THRESHOLD = 1024**3


def tune_malloc() -> bool:
    """Set glibc's mmap and trim thresholds for training; True when they were set."""
    if os.environ.get("RNNLAB_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, ...)
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success, 0 when it refuses a value
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and (
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    )
