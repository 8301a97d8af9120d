"""The "gather" form of the Triton ReLU + LRN kernels, the default for channels-last maps: each tensor is loaded
once per tile.

lrn_kernels' tile form loads relu(z) at 9 channel shifts and g and y at 5 each, 19 masked loads per
element. They are shifted by 1 to 4 channels, so they are not vectorised. Here a program loads a tile of
BLOCK_P pixels x BLOCK_C channels of one tower of channels-last maps once per tensor. Channels are contiguous
and the tile starts at a tower's first channel, so these are aligned vector loads. The window sums over a
tower's channels are then formed in registers: the neighbours at channel shifts -2 .. 2 come from `tl.gather`
along the channel axis, with clamped indices and a mask at the tower's edges, which are the tile's edges
(BLOCK_C = C rounded up to a power of two). A second form, the window sum as a product with a 0/1 band matrix
on tensor cores, was slower on an H100 at both layers and was dropped (docs/benchmarks.md).

The formulas are lrn_kernels' (forward: d_i = k + alpha/n sum_win a_j^2, y_i = a_i d_i^-beta; backward:
dz_i = [z_i > 0] (g_i d_i^-beta - 2 beta alpha/n a_i sum_win g_j y_j / d_j)), with the window clipped at each
tower's edges, and a NaN stays in its window as with torch.relu then the LRN.

The convolution's bias: with `bias`, z is the convolution's output without it, and the kernels add it as they
load z (the forward) and recompute it (the backward), which spares a pass over the maps each way; the backward
also sums dz over each tile's pixels, per channel, into the bias's gradient (`HAS_BIAS`).

Contiguous (NCHW) maps keep lrn_kernels' tile form: here the channels of a pixel are not adjacent, so a tile
would not be one vector load, and both launchers refuse such maps with a ValueError.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .grid import accumulator_dtype, cdiv, compute_type, next_power_of_2


@triton.jit
def _row_tile(pixels, row, channels, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Element offsets (int64) of this program's tile (pixel p, channel c of tower program_id(1) at
    p * row + tower * channels + c in channels-last maps), the channel indices and the mask."""
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.arange(0, BLOCK_C)
    mask = (p < pixels)[:, None] & (c < channels)[None, :]
    at = p.to(tl.int64)[:, None] * row + (tl.program_id(1) * channels + c)[None, :]
    return at, c, mask


@triton.jit
def _relu(z):
    return tl.where(z < 0.0, 0.0, z)  # not tl.maximum, which drops NaN on a GPU: torch.relu keeps it


@triton.jit
def _shifted(x, c, shift: tl.constexpr, channels, BLOCK_C: tl.constexpr):
    """x at channel c + shift of each row, 0 outside the tower. tl.where, not a product with a 0/1 mask, so a
    NaN at a clamped index stays out of the sum."""
    cc = c + shift
    index = tl.minimum(tl.maximum(cc, 0), BLOCK_C - 1)
    got = tl.gather(x, tl.broadcast_to(index[None, :], x.shape), 1)
    return tl.where(((cc >= 0) & (cc < channels))[None, :], got, 0.0)


@triton.jit
def _window(x, c, channels, BLOCK_C: tl.constexpr):
    """Sum of x over channels c-2 .. c+2 of the tower, in lrn_kernels' order of adds."""
    return (_shifted(x, c, -2, channels, BLOCK_C) + _shifted(x, c, -1, channels, BLOCK_C) + x
            + _shifted(x, c, 1, channels, BLOCK_C) + _shifted(x, c, 2, channels, BLOCK_C))


@triton.jit
def _conv_output(z_ptr, b_ptr, at, c, mask, channels, HAS_BIAS: tl.constexpr, COMPUTE: tl.constexpr):
    """The tile of z, plus the convolution's bias of each channel when the kernel adds it (HAS_BIAS): lanes past
    the tower get 0 either way."""
    z = tl.load(z_ptr + at, mask=mask, other=0.0).to(COMPUTE)
    if HAS_BIAS:
        b = tl.load(b_ptr + tl.program_id(1) * channels + c, mask=c < channels, other=0.0).to(COMPUTE)
        z = z + b[None, :]
    return z


@triton.jit
def relu_lrn_forward_window_kernel(z_ptr, b_ptr, y_ptr, pixels, row, channels, alpha_n, beta, k,
                                   BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, HAS_BIAS: tl.constexpr,
                                   COMPUTE: tl.constexpr):
    at, c, mask = _row_tile(pixels, row, channels, BLOCK_P, BLOCK_C)
    a = _relu(_conv_output(z_ptr, b_ptr, at, c, mask, channels, HAS_BIAS, COMPUTE))
    d = k + alpha_n * _window(a * a, c, channels, BLOCK_C)
    y = a * tl.exp(-beta * tl.log(d))
    tl.store(y_ptr + at, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def relu_lrn_backward_window_kernel(z_ptr, b_ptr, y_ptr, g_ptr, dz_ptr, part_ptr, pixels, row, channels, alpha_n,
                                    beta, k, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, HAS_BIAS: tl.constexpr,
                                    COMPUTE: tl.constexpr):
    at, c, mask = _row_tile(pixels, row, channels, BLOCK_P, BLOCK_C)
    a = _relu(_conv_output(z_ptr, b_ptr, at, c, mask, channels, HAS_BIAS, COMPUTE))
    d = k + alpha_n * _window(a * a, c, channels, BLOCK_C)
    g = tl.load(g_ptr + at, mask=mask, other=0.0).to(COMPUTE)
    y = tl.load(y_ptr + at, mask=mask, other=0.0).to(COMPUTE)
    _store_input_grad(dz_ptr, part_ptr, at, c, mask, a, d, tl.exp(-beta * tl.log(d)), g, y, row, channels, alpha_n,
                      beta, BLOCK_C, HAS_BIAS)


@triton.jit
def _store_input_grad(dz_ptr, part_ptr, at, c, mask, a, d, scale, g, y, row, channels, alpha_n, beta,
                      BLOCK_C: tl.constexpr, HAS_BIAS: tl.constexpr):
    """dz = [z > 0] (g d^-beta - 2 beta alpha/n a sum_win g y / d) from scale = d^-beta, stored; with a bias
    (HAS_BIAS) also this tile's share of its gradient, the sum of dz over the tile's pixels per channel, which
    `bias_grad` sums over the tiles."""
    # Lanes past the tower (c >= channels) hold g = y = 0, so their g y / d is 0 (d there is >= k > 0 unless a
    # neighbour is NaN; the gather leaves those lanes out of every real channel's sum anyway).
    w = _window(g * y / d, c, channels, BLOCK_C)
    dz = g * scale - 2.0 * beta * alpha_n * a * w
    dz = tl.where(a > 0.0, dz, 0.0)
    tl.store(dz_ptr + at, dz.to(dz_ptr.dtype.element_ty), mask=mask)
    if HAS_BIAS:
        part = tl.sum(tl.where(mask, dz, 0.0), axis=0)
        tl.store(part_ptr + tl.program_id(0).to(tl.int64) * row + tl.program_id(1) * channels + c,
                 part.to(part_ptr.dtype.element_ty), mask=c < channels)


WINDOW_FORMS = ("gather",)


def tile_shape(form: str, per_tower: int, tile: int) -> tuple[int, int]:
    """(pixel rows, channel lanes) of a program's tile of about `tile` elements: one tower's channels rounded up
    to a power of two."""
    block_c = next_power_of_2(per_tower)
    return max(1, tile // block_c), block_c


def _launch(form: str, z: torch.Tensor, towers: int, tile: int):
    """Grid and arguments of a window kernel for N x (towers*C) x H x W channels-last maps."""
    if not z.is_contiguous(memory_format=torch.channels_last):
        raise ValueError(f"the {form} LRN form needs channels-last maps: use the tile form for contiguous ones.")
    n, channels, h, w = z.shape
    per_tower = channels // towers
    block_p, block_c = tile_shape(form, per_tower, tile)
    grid = (cdiv(n * h * w, block_p), towers)
    meta = dict(BLOCK_P=block_p, BLOCK_C=block_c, COMPUTE=compute_type(z))
    return grid, (n * h * w, channels, per_tower), meta


def relu_lrn_forward_window(z: torch.Tensor, towers: int, alpha_n: float, beta: float, k: float, form: str,
                            tile: int, num_warps: int, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`bias`: the convolution's bias, added to z in the kernel (z is then the convolution without it)."""
    grid, args, meta = _launch(form, z, towers, tile)
    y = torch.empty_like(z)
    relu_lrn_forward_window_kernel[grid](z, z if bias is None else bias, y, *args, alpha_n, beta, k,
                                         HAS_BIAS=bias is not None, **meta, num_warps=num_warps)
    return y


def relu_lrn_backward_window(grad: torch.Tensor, z: torch.Tensor, y: torch.Tensor, towers: int, alpha_n: float,
                             beta: float, k: float, form: str, tile: int, num_warps: int,
                             bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dz, the bias's gradient or None without a bias); grad and y in z's (channels-last) layout. Each tile
    writes its sums of dz per channel, and those are summed here: the bias gradient costs no second pass over
    dz, and its order of adds is fixed (no atomics)."""
    grid, args, meta = _launch(form, z, towers, tile)
    dz, parts = torch.empty_like(z), bias_parts(z, bias, grid[0])
    relu_lrn_backward_window_kernel[grid](z, z if bias is None else bias, y, grad, dz, dz if parts is None else parts,
                                          *args, alpha_n, beta, k, HAS_BIAS=bias is not None, **meta,
                                          num_warps=num_warps)
    return dz, bias_grad(parts, bias)


def bias_parts(z: torch.Tensor, bias: torch.Tensor | None, tiles: int) -> torch.Tensor | None:
    """Room for each tile's per-channel sums of dz (`_store_input_grad`), in the kernels' accumulator dtype; None
    without a bias."""
    return None if bias is None else torch.empty(tiles, z.shape[1], dtype=accumulator_dtype(z), device=z.device)


def bias_grad(parts: torch.Tensor | None, bias: torch.Tensor | None) -> torch.Tensor | None:
    """The bias's gradient from the tiles' sums, in a fixed order (no atomics); None without a bias."""
    return None if parts is None else parts.sum(0).to(bias.dtype)
