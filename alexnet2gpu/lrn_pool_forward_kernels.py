"""The forward of ReLU + LRN + max-pool (conv1's and conv2's blocks, paper §3.3-3.4) as one Triton kernel: the
LRN's output is never written to memory, only the pooled maps and their one-byte argmax.

Apart, the LRN's forward writes its full-size output and the pool's forward reads it back. Pooling windows
overlap (3x3 at stride 2), so computing the LRN per window would compute most pixels two to four times. Here
each pixel's LRN is computed once, bar a column per strip: a program takes one image, one tower, a strip of
BLOCK_W - 1 pooled columns and up to BLOCK_H pooled rows, and walks down the rows. For each input row it
normalises the even and the odd input columns of its strip, BLOCK_W x one tower's channels each (the last
even column is the first window's of the next strip: computed by both); window column 2 is the even tile
moved up one place (`tl.gather`). The window's last input row is the next window's first, so it is carried
from one pooled row to the next. The maximum follows pool_kernels' rule and order (row-major, first maximum,
a NaN wins) on the LRN's output rounded to the maps' dtype, as the pool reads it apart: the same pooled maps
and argmax bit for bit as the two kernels (the tests compare them).

Off by default (`ONE_FORWARD_KERNEL`) until a GPU measures it against the two kernels:
tools/lrn_microbench.py's "+pool forward" lines.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .grid_math import cdiv, compute_type, next_power_of_2
from .lrn_window_kernels import _conv_output, _relu, _window
from .maps import memory_format_of
from .pool_kernels import empty_outputs

ONE_FORWARD_KERNEL = False  # lrn_pool_op's forward: this kernel (True) or the LRN's and the pool's in turn
BLOCK_W, BLOCK_H = 16, 8  # pooled columns a strip + 1, pooled rows a program; tools/lrn_microbench.py tries others
NUM_WARPS = 4


@triton.jit
def _normalised(z_ptr, b_ptr, z_image, row, cols, c, height, width, szh, szw, channels, alpha_n, beta, k,
                BLOCK_C: tl.constexpr, HAS_BIAS: tl.constexpr, COMPUTE: tl.constexpr, STORED: tl.constexpr):
    """LRN(relu(z + b)) at input `row`, columns `cols` ([BLOCK_W]), this tower's channels: [BLOCK_W, BLOCK_C],
    rounded to the maps' dtype as the LRN's kernel stores it (0 outside the maps)."""
    mask = ((cols < width) & (row < height))[:, None] & (c < channels)[None, :]
    at = (z_image + row * szh + cols[:, None] * szw  # within an image: int32 (the image offset is int64)
          + (tl.program_id(1) * channels + c)[None, :])
    a = _relu(_conv_output(z_ptr, b_ptr, at, c, mask, channels, HAS_BIAS, COMPUTE))
    d = k + alpha_n * _window(a * a, c, channels, BLOCK_C)
    return (a * tl.exp(-beta * tl.log(d))).to(STORED).to(COMPUTE)


@triton.jit
def _take(v, best, where, position: tl.constexpr):
    """pool_kernels' rule, `v > best or isnan(v)`: the first maximum wins a tie, a NaN wins."""
    take = (v > best) | (v != v)
    return tl.where(take, v, best), tl.where(take, position, where)


@triton.jit
def _window_row(even, odd, moved, best, where, FIRST: tl.constexpr):
    """One input row of the windows: columns 0, 1, 2 of it at window positions FIRST, FIRST + 1, FIRST + 2."""
    best, where = _take(even, best, where, FIRST)
    best, where = _take(odd, best, where, FIRST + 1)
    return _take(tl.gather(even, moved, 0), best, where, FIRST + 2)


@triton.jit
def relu_lrn_pool_forward_kernel(z_ptr, b_ptr, y_ptr, arg_ptr, height, width, out_h, out_w, channels, strips,
                                 szn, szh, szw, syn, syh, syw, alpha_n, beta, k, BLOCK_W: tl.constexpr,
                                 BLOCK_H: tl.constexpr, BLOCK_C: tl.constexpr, HAS_BIAS: tl.constexpr,
                                 COMPUTE: tl.constexpr):
    pid = tl.program_id(0)
    strip = pid % strips
    image = (pid // strips // tl.cdiv(out_h, BLOCK_H)).to(tl.int64)
    first_row = (pid // strips % tl.cdiv(out_h, BLOCK_H)) * BLOCK_H
    lane = tl.arange(0, BLOCK_W)
    ow = strip * (BLOCK_W - 1) + lane  # the strip's pooled columns, and the first of the next strip's
    even = 2 * ow
    c = tl.arange(0, BLOCK_C)
    moved = tl.broadcast_to(tl.minimum(lane + 1, BLOCK_W - 1)[:, None], (BLOCK_W, BLOCK_C))
    out_mask = ((lane < BLOCK_W - 1) & (ow < out_w))[:, None] & (c < channels)[None, :]
    out_at = image * syn + ow[:, None] * syw + (tl.program_id(1) * channels + c)[None, :]
    z_image = image * szn
    stored = y_ptr.dtype.element_ty
    top_even = _normalised(z_ptr, b_ptr, z_image, 2 * first_row, even, c, height, width, szh, szw, channels,
                           alpha_n, beta, k, BLOCK_C, HAS_BIAS, COMPUTE, stored)
    top_odd = _normalised(z_ptr, b_ptr, z_image, 2 * first_row, even + 1, c, height, width, szh, szw, channels,
                          alpha_n, beta, k, BLOCK_C, HAS_BIAS, COMPUTE, stored)
    for oh in range(first_row, tl.minimum(first_row + BLOCK_H, out_h)):
        # Starting below everything, the first element is taken as pool_kernels takes it (NaN included).
        best = tl.full((BLOCK_W, BLOCK_C), float("-inf"), COMPUTE)
        best, where = _window_row(top_even, top_odd, moved, best, tl.zeros((BLOCK_W, BLOCK_C), tl.int32), 0)
        mid_even = _normalised(z_ptr, b_ptr, z_image, 2 * oh + 1, even, c, height, width, szh, szw, channels,
                               alpha_n, beta, k, BLOCK_C, HAS_BIAS, COMPUTE, stored)
        mid_odd = _normalised(z_ptr, b_ptr, z_image, 2 * oh + 1, even + 1, c, height, width, szh, szw, channels,
                              alpha_n, beta, k, BLOCK_C, HAS_BIAS, COMPUTE, stored)
        best, where = _window_row(mid_even, mid_odd, moved, best, where, 3)
        # The window's last row: also the next window's first.
        top_even = _normalised(z_ptr, b_ptr, z_image, 2 * oh + 2, even, c, height, width, szh, szw, channels,
                               alpha_n, beta, k, BLOCK_C, HAS_BIAS, COMPUTE, stored)
        top_odd = _normalised(z_ptr, b_ptr, z_image, 2 * oh + 2, even + 1, c, height, width, szh, szw, channels,
                              alpha_n, beta, k, BLOCK_C, HAS_BIAS, COMPUTE, stored)
        best, where = _window_row(top_even, top_odd, moved, best, where, 6)
        at = out_at + oh * syh
        tl.store(y_ptr + at, best.to(stored), mask=out_mask)
        tl.store(arg_ptr + at, where.to(tl.int8), mask=out_mask)


def relu_lrn_pool_forward(z: torch.Tensor, towers: int, alpha_n: float, beta: float, k: float,
                          bias: torch.Tensor | None = None, block_w: int | None = None, block_h: int | None = None,
                          num_warps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(max_pool(LRN(relu(z + bias))), the pool's int8 argmax, dy*3 + dx) for channels-last N x (towers*C) x H x W
    maps, both in z's layout, as pool_kernels.max_pool_forward of lrn_kernels.relu_lrn_forward gives them."""
    if memory_format_of(z) != torch.channels_last:
        raise ValueError("the one-kernel ReLU + LRN + max-pool forward needs channels-last maps: run the LRN and the "
                         "pool apart for contiguous ones.")
    block_w, block_h = block_w or BLOCK_W, block_h or BLOCK_H
    if block_w < 2 or block_w & (block_w - 1):
        raise ValueError(f"block_w {block_w}: pass a power of two of at least 2 (the strip's columns plus one).")
    pooled, argmax = empty_outputs(z)
    n, channels, h, w = z.shape
    _, _, out_h, out_w = pooled.shape
    per_tower = channels // towers
    strips = cdiv(out_w, block_w - 1)
    grid = (n * cdiv(out_h, block_h) * strips, towers)
    sn, _, sh, sw = z.stride()
    yn, _, yh, yw = pooled.stride()
    relu_lrn_pool_forward_kernel[grid](
        z, z if bias is None else bias, pooled, argmax, h, w, out_h, out_w, per_tower, strips, sn, sh, sw, yn, yh, yw,
        alpha_n, beta, k, BLOCK_W=block_w, BLOCK_H=block_h, BLOCK_C=next_power_of_2(per_tower),
        HAS_BIAS=bias is not None, COMPUTE=compute_type(z), num_warps=num_warps or NUM_WARPS)
    return pooled, argmax
