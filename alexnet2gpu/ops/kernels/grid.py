"""Host-side arithmetic of the Triton launches: grids and tile sizes in plain Python, and the dtype kernels
compute in.

triton.cdiv and triton.next_power_of_2 are constexpr functions: called from Python each unwraps its arguments
through Triton's machinery, tens of microseconds a call on a slow host, and an eager training step makes a
dozen such calls around its ten Triton launches, all of it host time a GPU step waits for
(docs/benchmarks.md).
"""
from __future__ import annotations

import torch
import triton.language as tl


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n, for n >= 1, as triton.next_power_of_2."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def accumulator_dtype(maps: torch.Tensor) -> torch.dtype:
    """What the kernels compute and sum in for `maps`: float64 for float64 maps, float32 for the others (bf16 and
    fp16 maps are read and written in their own dtype)."""
    return torch.float64 if maps.dtype == torch.float64 else torch.float32


def compute_type(maps: torch.Tensor):
    """accumulator_dtype as the kernels' COMPUTE constexpr."""
    return {torch.float64: tl.float64, torch.float32: tl.float32}[accumulator_dtype(maps)]
