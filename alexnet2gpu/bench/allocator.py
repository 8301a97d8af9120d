"""Host memory allocation: keep freed memory for reuse (a CPU speed fix; figures in docs/benchmarks.md).

glibc's malloc hands blocks larger than its mmap threshold (at most 32 MB by default) straight back to the
operating system when they are freed, so the next step's allocation of the same size page-faults and zeroes
every page again. A training step of AlexNet at batch 128 frees and re-allocates dozens of such tensors
(conv1's maps alone are 149 MB), and on a small CPU these page faults cost a large slice of the step. Raising the mmap and trim thresholds makes freed blocks stay in the heap for reuse,
the way PyTorch's CUDA caching allocator keeps GPU memory. The price: the process keeps its peak memory.
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc malloc.h
KEEP_BYTES = 1 << 30


def keep_freed_memory() -> bool:
    """Ask glibc malloc to keep freed blocks up to 1 GiB for reuse. Returns False where this is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))
