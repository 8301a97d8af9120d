"""Triton kernels of the paper's overlapping max-pool (3x3 windows, stride 2, no padding, floor mode; paper §3.4),
forward and backward, storing the position of each window's maximum in one byte.

Forward: each output y[n, c, oh, ow] is the maximum of the window x[n, c, 2oh .. 2oh+2, 2ow .. 2ow+2], read in
row-major order with ATen's rule `v > best or isnan(v)`: the first maximum wins a tie, and a NaN wins (the last
NaN of the window), so a NaN propagates as through F.max_pool2d. Beside y it writes the window position of
that element, dy*3 + dx in 0..8, as int8 (ATen writes the flat input index as int64: 8 bytes an output).

Backward, a gather (no atomics): an input row ih lies in the window oh = ih // 2 (at dy = ih - 2 oh, 0 or 1)
and, when ih is even, also in the window oh - 1 (as its last row, dy = 2); the same for columns. Each input
pixel therefore reads at most 2 x 2 output windows and adds the gradient of those whose argmax points at it,
in ATen's CUDA order (window above-left first), in fp32. Rows and columns past the last window (floor mode
drops them) get zero.

Layouts: the kernels take strides, so channels-last maps (N x H x W x C in memory, the model's default) and
contiguous ones both work, and the gradient may come in any layout. A program takes BLOCK_P pixels of one
image x BLOCK_C channels (`_blocks`): with channels-last maps neighbouring lanes take neighbouring channels,
with contiguous maps neighbouring pixels (the tile is then laid out channels x pixels, PIXELS_FAST). Pixel
indices within an image are int32, memory offsets int64. Arithmetic runs in fp32 (fp64 for fp64 maps): the
maximum is exact in any dtype, and each gradient sum is rounded once to the map's dtype.

Imported lazily (Triton compiles on first use); `TRITON_INTERPRET=1` runs these kernels on CPU tensors, which
is how the CPU test suite checks them. Tile sizes are module constants that tools/pool_microbench.py overrides.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..maps import memory_format_of
from .grid import cdiv, compute_type, next_power_of_2
from .sizes import FLOATS, POOL_KERNEL as KERNEL, POOL_STRIDE as STRIDE  # the only pool they compute

# Elements per program and warps; tools/pool_microbench.py times the alternatives on a GPU.
FORWARD_TILE, BACKWARD_TILE = 1024, 2048
NUM_WARPS = 4
MAX_CHANNEL_BLOCK = 128  # channels of one tile row in channels-last maps


@triton.jit
def _spread(per_pixel, PIXELS_FAST: tl.constexpr):
    """A per-pixel vector as a column of the [pixels, channels] tile, or as a row of the [channels, pixels]
    tile that contiguous maps use (PIXELS_FAST: neighbouring lanes then take neighbouring pixels)."""
    if PIXELS_FAST:
        return per_pixel[None, :]
    else:
        return per_pixel[:, None]


@triton.jit
def _spread_channels(per_channel, PIXELS_FAST: tl.constexpr):
    if PIXELS_FAST:
        return per_channel[:, None]
    else:
        return per_channel[None, :]


@triton.jit
def _tile(pixels, width, channels, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, PIXELS_FAST: tl.constexpr):
    """This program's image (int64), the (row, column) of its BLOCK_P pixels of that image, its BLOCK_C
    channels (int64), and the tile's mask."""
    blocks = tl.cdiv(pixels, BLOCK_P)
    pid = tl.program_id(0)
    image = (pid // blocks).to(tl.int64)
    q = (pid % blocks) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = _spread(q < pixels, PIXELS_FAST) & _spread_channels(c < channels, PIXELS_FAST)
    return image, q // width, q % width, c.to(tl.int64), mask


@triton.jit
def _at(image, row, col, c, sn, sc, sh, sw, PIXELS_FAST: tl.constexpr):
    """int64 offsets of the tile from its image, rows and columns (per pixel) and channels."""
    pixel = image * sn + row.to(tl.int64) * sh + col.to(tl.int64) * sw
    return _spread(pixel, PIXELS_FAST) + _spread_channels(c * sc, PIXELS_FAST)


@triton.jit
def max_pool_forward_kernel(x_ptr, y_ptr, arg_ptr, out_pixels, out_w, channels, sxn, sxc, sxh, sxw,
                            syn, syc, syh, syw, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
                            PIXELS_FAST: tl.constexpr, COMPUTE: tl.constexpr):
    image, oh, ow, c, mask = _tile(out_pixels, out_w, channels, BLOCK_P, BLOCK_C, PIXELS_FAST)
    corner = _at(image, oh * 2, ow * 2, c, sxn, sxc, sxh, sxw, PIXELS_FAST)  # each window's top-left element
    best = tl.load(x_ptr + corner, mask=mask, other=0.0).to(COMPUTE)
    where = tl.zeros(best.shape, dtype=tl.int32)
    for k in tl.static_range(1, 9):  # row-major over the window, as ATen reads it
        v = tl.load(x_ptr + corner + (k // 3) * sxh + (k % 3) * sxw, mask=mask, other=0.0).to(COMPUTE)
        take = (v > best) | (v != v)  # ATen's `val > max || isnan(val)`: first maximum, NaN wins
        best = tl.where(take, v, best)
        where = tl.where(take, k, where)
    out = _at(image, oh, ow, c, syn, syc, syh, syw, PIXELS_FAST)
    tl.store(y_ptr + out, best.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(arg_ptr + out, where.to(tl.int8), mask=mask)


@triton.jit
def _window_grad(g_ptr, arg_ptr, image, oh, ow, c, position, valid, mask, sgn, sgc, sgh, sgw, san, sac, sah, saw,
                 PIXELS_FAST: tl.constexpr, COMPUTE: tl.constexpr):
    """The gradient of window (oh, ow) where its argmax is `position` (this pixel), else 0."""
    inside = mask & _spread(valid, PIXELS_FAST)
    arg = tl.load(arg_ptr + _at(image, oh, ow, c, san, sac, sah, saw, PIXELS_FAST), mask=inside, other=-1)
    hit = inside & (arg.to(tl.int32) == _spread(position, PIXELS_FAST))
    at = _at(image, oh, ow, c, sgn, sgc, sgh, sgw, PIXELS_FAST)
    return tl.load(g_ptr + at, mask=hit, other=0.0).to(COMPUTE)


@triton.jit
def gathered_grad(g_ptr, arg_ptr, image, ih, iw, c, mask, out_h, out_w, sgn, sgc, sgh, sgw, san, sac, sah, saw,
                  PIXELS_FAST: tl.constexpr, COMPUTE: tl.constexpr):
    """dL/dx at input pixels (ih, iw) and channels c: the gradients of the windows whose argmax is that pixel."""
    oh = ih // 2  # the window starting at this row or the one before it (dy 0 or 1)
    ow = iw // 2
    dy = ih - 2 * oh
    dx = iw - 2 * ow
    row = oh < out_h  # floor mode: the last row may lie in no window
    col = ow < out_w
    up = (dy == 0) & (oh >= 1) & (oh <= out_h)  # an even row is also the last row (dy = 2) of window oh - 1
    left = (dx == 0) & (ow >= 1) & (ow <= out_w)
    # ATen's CUDA order: windows above before below, left before right; each adds 0 unless it points here.
    acc = _window_grad(g_ptr, arg_ptr, image, oh - 1, ow - 1, c, tl.full(oh.shape, 8, tl.int32), up & left, mask,
                       sgn, sgc, sgh, sgw, san, sac, sah, saw, PIXELS_FAST, COMPUTE)
    acc += _window_grad(g_ptr, arg_ptr, image, oh - 1, ow, c, 6 + dx, up & col, mask,
                        sgn, sgc, sgh, sgw, san, sac, sah, saw, PIXELS_FAST, COMPUTE)
    acc += _window_grad(g_ptr, arg_ptr, image, oh, ow - 1, c, dy * 3 + 2, row & left, mask,
                        sgn, sgc, sgh, sgw, san, sac, sah, saw, PIXELS_FAST, COMPUTE)
    acc += _window_grad(g_ptr, arg_ptr, image, oh, ow, c, dy * 3 + dx, row & col, mask,
                        sgn, sgc, sgh, sgw, san, sac, sah, saw, PIXELS_FAST, COMPUTE)
    return acc


@triton.jit
def max_pool_backward_kernel(g_ptr, arg_ptr, dx_ptr, in_pixels, in_w, out_h, out_w, channels,
                             sgn, sgc, sgh, sgw, san, sac, sah, saw, sdn, sdc, sdh, sdw, BLOCK_P: tl.constexpr,
                             BLOCK_C: tl.constexpr, PIXELS_FAST: tl.constexpr, COMPUTE: tl.constexpr):
    image, ih, iw, c, mask = _tile(in_pixels, in_w, channels, BLOCK_P, BLOCK_C, PIXELS_FAST)
    acc = gathered_grad(g_ptr, arg_ptr, image, ih, iw, c, mask, out_h, out_w, sgn, sgc, sgh, sgw, san, sac, sah, saw,
                        PIXELS_FAST, COMPUTE)
    dx_at = _at(image, ih, iw, c, sdn, sdc, sdh, sdw, PIXELS_FAST)
    tl.store(dx_ptr + dx_at, acc.to(dx_ptr.dtype.element_ty), mask=mask)


def pooled_shape(x: torch.Tensor) -> tuple[int, int, int, int]:
    n, c, h, w = x.shape
    return n, c, (h - KERNEL) // STRIDE + 1, (w - KERNEL) // STRIDE + 1


def empty_outputs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The pooled maps and their int8 argmax, unfilled, in x's memory layout (also the op's fake result)."""
    fmt = memory_format_of(x)
    y = torch.empty(pooled_shape(x), dtype=x.dtype, device=x.device, memory_format=fmt)
    return y, torch.empty(y.shape, dtype=torch.int8, device=x.device, memory_format=fmt)


def empty_input_grad(x: torch.Tensor) -> torch.Tensor:
    return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=memory_format_of(x))


def _blocks(x: torch.Tensor, pixels: int, tile: int) -> dict:
    """The tile for images of `pixels` pixels. Channels-last maps: runs of neighbouring channels, the largest
    power of two dividing C (no lane is padding; C = 96 gives 32) unless that is under 16 (then C padded to a
    power of two), x the pixels that fill `tile`. Contiguous maps: an image's pixels (up to `tile`) x the
    channels that fill the rest. Never more pixels than an image has, so small maps leave few lanes idle."""
    channels, pixel_block = x.shape[1], next_power_of_2(pixels)
    if memory_format_of(x) == torch.channels_last:
        block_c = channels & -channels
        block_c = min(block_c if block_c >= 16 else next_power_of_2(channels), MAX_CHANNEL_BLOCK)
        return dict(BLOCK_P=min(max(1, tile // block_c), pixel_block), BLOCK_C=block_c, PIXELS_FAST=False)
    block_p = min(pixel_block, tile)
    block_c = min(max(1, tile // block_p), next_power_of_2(channels))
    return dict(BLOCK_P=block_p, BLOCK_C=block_c, PIXELS_FAST=True)


def _check(x: torch.Tensor) -> None:
    if x.dim() != 4 or x.dtype not in FLOATS or x.shape[2] < KERNEL or x.shape[3] < KERNEL:
        raise ValueError(f"the Triton max-pool takes N x C x H x W floating-point maps of at least 3x3, not "
                         f"{x.dtype} of shape {tuple(x.shape)}: use F.max_pool2d.")
    if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
        raise ValueError("the Triton max-pool needs contiguous or channels-last maps: call .contiguous() first.")


def max_pool_forward(x: torch.Tensor, tile: int | None = None,
                     num_warps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, argmax): the 3x3 stride-2 max-pool of x and each window's int8 position of its maximum (dy*3+dx)."""
    _check(x)
    y, arg = empty_outputs(x)
    n, c, oh, ow = y.shape
    if y.numel():
        meta = _blocks(x, oh * ow, tile or FORWARD_TILE)
        grid = (n * cdiv(oh * ow, meta["BLOCK_P"]), cdiv(c, meta["BLOCK_C"]))
        max_pool_forward_kernel[grid](x, y, arg, oh * ow, ow, c, *x.stride(), *y.stride(), **meta,
                                      COMPUTE=compute_type(x), num_warps=num_warps or NUM_WARPS)
    return y, arg


def max_pool_backward(grad: torch.Tensor, x: torch.Tensor, argmax: torch.Tensor, tile: int | None = None,
                      num_warps: int | None = None) -> torch.Tensor:
    """dL/dx from the gradient at y and the forward's argmax; x gives only the shape, dtype and layout."""
    dx = empty_input_grad(x)
    if argmax.shape != pooled_shape(x) or argmax.dtype != torch.int8:
        raise ValueError(f"the argmax must be the forward's int8 N x C x H' x W' tensor for maps of shape "
                         f"{tuple(x.shape)}, not {argmax.dtype} of shape {tuple(argmax.shape)}.")
    if grad.shape != argmax.shape:
        raise ValueError(f"the gradient must have the pooled shape {tuple(argmax.shape)}, not {tuple(grad.shape)}.")
    n, c, h, w = x.shape
    if dx.numel():
        meta = _blocks(dx, h * w, tile or BACKWARD_TILE)
        grid = (n * cdiv(h * w, meta["BLOCK_P"]), cdiv(c, meta["BLOCK_C"]))
        # strided reads: a gradient in another layout (flatten's backward gives pool5's contiguous) needs no copy
        max_pool_backward_kernel[grid](grad, argmax, dx, h * w, w, argmax.shape[2], argmax.shape[3], c,
                                       *grad.stride(), *argmax.stride(), *dx.stride(), **meta,
                                       COMPUTE=compute_type(x), num_warps=num_warps or NUM_WARPS)
    return dx
