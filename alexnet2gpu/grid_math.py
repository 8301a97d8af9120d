"""Host-side integer arithmetic of the Triton launches (grids, tile sizes), in plain Python.

triton.cdiv and triton.next_power_of_2 are constexpr functions: called from Python each unwraps its arguments
through Triton's machinery, tens of microseconds a call on a slow host, and an eager training step makes a
dozen such calls around its ten Triton launches, all of it host time a GPU step waits for
(docs/BENCHMARKS.md).
"""
from __future__ import annotations


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n, for n >= 1, as triton.next_power_of_2."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()
