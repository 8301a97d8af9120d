"""Triton kernels of ReLU + local response normalisation per tower (paper §3.3), forward and backward.

For the conv output z of one tower's C channels, a = relu(z), and the window of n channels around i
clipped at the tower's edges:

    d_i = k + alpha/n * sum_{j in win(i)} a_j^2,        y_i = a_i * d_i^-beta
    dL/dz_i = [z_i > 0] * (g_i d_i^-beta - 2 beta alpha/n * a_i * sum_{j in win(i)} g_j a_j d_j^(-beta-1))

(the window is symmetric, so the backward's sum runs over the same window). Each program takes a tile of
BLOCK_P pixels x one tower's channels; a window sum is the sum of the tile loaded at channel shifts -n/2 ..
n/2, which are cache hits after the first. The backward recomputes the d's from z and takes the saved output:
g_j a_j d_j^(-beta-1) = g_j y_j / d_j, a division where a power would cost an exp and a log per neighbour.
The gather form (lrn_window.py) loads each tensor once per tile and forms the window sums in registers;
it is the default for channels-last maps, these kernels for contiguous ones. tools/lrn_microbench.py times both.

Layouts: a pixel p = (image, h, w) of the maps sits at image * stride_n + (h*W + w) * stride_p, and channel c
of tower t at + (t*C + c) * stride_c: channels-last maps (stride_c 1) and contiguous maps (stride_p 1) alike.
Arithmetic runs in fp32 (fp64 for fp64 maps; on a GPU Triton's exp and log then keep about fp32 accuracy).
The window size is the paper's n = 5 (`SIZE`).

Imported lazily (Triton compiles on first use); `TRITON_INTERPRET=1` runs these kernels on CPU tensors,
which is how the CPU test suite checks them.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..maps import memory_format_of, plus_bias
from .grid import accumulator_dtype, cdiv, compute_type, next_power_of_2
from .lrn_window import WINDOW_FORMS, relu_lrn_backward_window, relu_lrn_forward_window
from .sizes import WINDOW

SIZE = WINDOW  # the only window these kernels take (paper §3.3: n = 5)
# Elements per program, chosen by tools/lrn_microbench.py on an H100 (docs/benchmarks.md); 4 warps. The tile
# form runs best at 1024 (forward) and 512 (backward), the gather form at 1024 both ways.
FORWARD_TILE, BACKWARD_TILE, WINDOW_TILE = 1024, 512, 1024


@triton.jit
def _relu_at(z_ptr, offsets, c, shift, channels, stride_c, pixel_mask, COMPUTE: tl.constexpr):
    """relu(z) at channel c + shift of every pixel row; 0 outside the tower (the window is clipped there)."""
    cc = c + shift
    mask = pixel_mask[:, None] & ((cc >= 0) & (cc < channels))[None, :]
    z = tl.load(z_ptr + offsets[:, None] + (cc * stride_c)[None, :], mask=mask, other=0.0).to(COMPUTE)
    return tl.where(z < 0.0, 0.0, z)  # not tl.maximum, which drops NaN on a GPU: torch.relu keeps it


@triton.jit
def _tile(pid, tower, pixels, hw, stride_n, stride_p, stride_c, channels, BLOCK_P: tl.constexpr,
          BLOCK_C: tl.constexpr):
    """Row offsets (int64) of this program's pixels at its tower's first channel, the channel indices, masks."""
    p = pid * BLOCK_P + tl.arange(0, BLOCK_P)
    pixel_mask = p < pixels
    p64 = p.to(tl.int64)
    offsets = (p64 // hw) * stride_n + (p64 % hw) * stride_p + (tower * channels).to(tl.int64) * stride_c
    c = tl.arange(0, BLOCK_C)
    return offsets, c, pixel_mask


@triton.jit
def relu_lrn_forward_kernel(z_ptr, y_ptr, pixels, hw, stride_n, stride_p, stride_c, channels, alpha_n, beta, k,
                            BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, COMPUTE: tl.constexpr):
    offsets, c, pixel_mask = _tile(tl.program_id(0), tl.program_id(1), pixels, hw, stride_n, stride_p, stride_c,
                                   channels, BLOCK_P, BLOCK_C)
    a_m2 = _relu_at(z_ptr, offsets, c, -2, channels, stride_c, pixel_mask, COMPUTE)
    a_m1 = _relu_at(z_ptr, offsets, c, -1, channels, stride_c, pixel_mask, COMPUTE)
    a_0 = _relu_at(z_ptr, offsets, c, 0, channels, stride_c, pixel_mask, COMPUTE)
    a_p1 = _relu_at(z_ptr, offsets, c, 1, channels, stride_c, pixel_mask, COMPUTE)
    a_p2 = _relu_at(z_ptr, offsets, c, 2, channels, stride_c, pixel_mask, COMPUTE)
    d = k + alpha_n * (a_m2 * a_m2 + a_m1 * a_m1 + a_0 * a_0 + a_p1 * a_p1 + a_p2 * a_p2)
    y = a_0 * tl.exp(-beta * tl.log(d))
    mask = pixel_mask[:, None] & (c < channels)[None, :]
    tl.store(y_ptr + offsets[:, None] + (c * stride_c)[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _output_term(g_ptr, y_ptr, offsets, c, shift, channels, stride_c, pixel_mask, d, COMPUTE: tl.constexpr):
    """g_j y_j / d_j = g_j a_j d_j^(-beta-1) at channel j = c + shift (0 outside the tower)."""
    cc = c + shift
    mask = pixel_mask[:, None] & ((cc >= 0) & (cc < channels))[None, :]
    at = offsets[:, None] + (cc * stride_c)[None, :]
    g = tl.load(g_ptr + at, mask=mask, other=0.0).to(COMPUTE)
    y = tl.load(y_ptr + at, mask=mask, other=0.0).to(COMPUTE)
    return g * y / d


@triton.jit
def relu_lrn_backward_kernel(z_ptr, y_ptr, g_ptr, dz_ptr, pixels, hw, stride_n, stride_p, stride_c, channels,
                             alpha_n, beta, k, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
                             COMPUTE: tl.constexpr):
    offsets, c, pixel_mask = _tile(tl.program_id(0), tl.program_id(1), pixels, hw, stride_n, stride_p, stride_c,
                                   channels, BLOCK_P, BLOCK_C)
    # relu(z) at shifts -4 .. 4: d at shifts -2 .. 2 needs each of their windows.
    s_m4 = _squared(_relu_at(z_ptr, offsets, c, -4, channels, stride_c, pixel_mask, COMPUTE))
    s_m3 = _squared(_relu_at(z_ptr, offsets, c, -3, channels, stride_c, pixel_mask, COMPUTE))
    s_m2 = _squared(_relu_at(z_ptr, offsets, c, -2, channels, stride_c, pixel_mask, COMPUTE))
    s_m1 = _squared(_relu_at(z_ptr, offsets, c, -1, channels, stride_c, pixel_mask, COMPUTE))
    a_0 = _relu_at(z_ptr, offsets, c, 0, channels, stride_c, pixel_mask, COMPUTE)
    s_0 = a_0 * a_0
    s_p1 = _squared(_relu_at(z_ptr, offsets, c, 1, channels, stride_c, pixel_mask, COMPUTE))
    s_p2 = _squared(_relu_at(z_ptr, offsets, c, 2, channels, stride_c, pixel_mask, COMPUTE))
    s_p3 = _squared(_relu_at(z_ptr, offsets, c, 3, channels, stride_c, pixel_mask, COMPUTE))
    s_p4 = _squared(_relu_at(z_ptr, offsets, c, 4, channels, stride_c, pixel_mask, COMPUTE))
    d_0 = k + alpha_n * (s_m2 + s_m1 + s_0 + s_p1 + s_p2)
    # The saved output y_j = a_j d_j^-beta turns each neighbour's term into one division (no exp or log).
    w = _output_term(g_ptr, y_ptr, offsets, c, -2, channels, stride_c, pixel_mask,
                     k + alpha_n * (s_m4 + s_m3 + s_m2 + s_m1 + s_0), COMPUTE)
    w += _output_term(g_ptr, y_ptr, offsets, c, -1, channels, stride_c, pixel_mask,
                      k + alpha_n * (s_m3 + s_m2 + s_m1 + s_0 + s_p1), COMPUTE)
    w += _output_term(g_ptr, y_ptr, offsets, c, 0, channels, stride_c, pixel_mask, d_0, COMPUTE)
    w += _output_term(g_ptr, y_ptr, offsets, c, 1, channels, stride_c, pixel_mask,
                      k + alpha_n * (s_m1 + s_0 + s_p1 + s_p2 + s_p3), COMPUTE)
    w += _output_term(g_ptr, y_ptr, offsets, c, 2, channels, stride_c, pixel_mask,
                      k + alpha_n * (s_0 + s_p1 + s_p2 + s_p3 + s_p4), COMPUTE)
    mask = pixel_mask[:, None] & (c < channels)[None, :]
    here = offsets[:, None] + (c * stride_c)[None, :]
    g_0 = tl.load(g_ptr + here, mask=mask, other=0.0).to(COMPUTE)
    dz = g_0 * tl.exp(-beta * tl.log(d_0)) - 2.0 * beta * alpha_n * a_0 * w
    dz = tl.where(a_0 > 0.0, dz, 0.0)
    tl.store(dz_ptr + here, dz.to(dz_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _squared(a):
    return a * a


def _geometry(z: torch.Tensor, towers: int, tile: int):
    """Kernel arguments describing N x (towers*C) x H x W maps in either memory layout, and the grid."""
    n, channels, h, w = z.shape
    per_tower = channels // towers
    sn, sc, sh, sw = z.stride()
    if sh == w * sw:  # pixels evenly spaced: channels-last (sw = channels) or contiguous (sw = 1)
        stride_p = sw
    else:
        raise ValueError("the Triton LRN needs contiguous or channels-last maps.")
    block_c = next_power_of_2(per_tower)
    block_p = max(1, tile // block_c)
    grid = (cdiv(n * h * w, block_p), towers)
    args = (n * h * w, h * w, sn, stride_p, sc, per_tower)
    return grid, args, dict(BLOCK_P=block_p, BLOCK_C=block_c, COMPUTE=compute_type(z))


# "gather" loads each tensor once per tile (lrn_window.py); channels-last maps only.
FORMS = ("tile",) + WINDOW_FORMS


def default_form(z: torch.Tensor) -> str:
    """The gather form for channels-last maps (one aligned load of each tensor a tile; the fastest form both ways
    on an H100, at 48 and 128 maps a tower), the tile form for contiguous ones (the only other form they take)."""
    return "gather" if memory_format_of(z) == torch.channels_last else "tile"


def relu_lrn_forward(z: torch.Tensor, towers: int, alpha: float, beta: float, k: float, tile: int | None = None,
                     num_warps: int = 4, form: str | None = None, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = LRN(relu(z + bias)) per tower; `bias` (the convolution's, per channel) is optional."""
    form = _checked(form or default_form(z))
    if form != "tile":
        return relu_lrn_forward_window(z, towers, alpha / SIZE, beta, k, form, tile or WINDOW_TILE, num_warps, bias)
    z = plus_bias(z, bias)  # the tile form (contiguous maps, off the default path) adds it in a pass of its own
    tile = tile or FORWARD_TILE
    y = torch.empty_like(z)  # keeps z's memory layout, so the strides below hold for y too
    grid, args, meta = _geometry(z, towers, tile)
    relu_lrn_forward_kernel[grid](z, y, *args, alpha / SIZE, beta, k, **meta, num_warps=num_warps)
    return y


def relu_lrn_backward(grad: torch.Tensor, z: torch.Tensor, y: torch.Tensor, towers: int, alpha: float, beta: float,
                      k: float, form: str | None = None, tile: int | None = None, num_warps: int = 4,
                      bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dL/dz, dL/dbias or None without a bias) from the gradient at y, the op's input z and its output y (both
    in z's memory layout)."""
    grad = grad.contiguous(memory_format=memory_format_of(z))  # the kernels walk g with z's strides
    form = _checked(form or default_form(z))
    if form in WINDOW_FORMS:
        return relu_lrn_backward_window(grad, z, y, towers, alpha / SIZE, beta, k, form, tile or WINDOW_TILE,
                                        num_warps, bias)
    z = plus_bias(z, bias)
    tile = tile or BACKWARD_TILE
    dz = torch.empty_like(z)
    grid, args, meta = _geometry(z, towers, tile)
    relu_lrn_backward_kernel[grid](z, y, grad, dz, *args, alpha / SIZE, beta, k, **meta, num_warps=num_warps)
    if bias is None:
        return dz, None
    return dz, dz.sum((0, 2, 3), dtype=accumulator_dtype(z)).to(bias.dtype)


def _checked(form: str) -> str:
    if form not in FORMS:
        raise ValueError(f"unknown LRN kernel form {form!r}: choose one of {', '.join(FORMS)}.")
    return form
