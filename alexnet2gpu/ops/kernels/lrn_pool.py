"""The backward of ReLU + LRN + max-pool (conv1's and conv2's blocks, paper §3.3-3.4) as one Triton kernel.

Apart, the block's backward is two kernels: the max-pool's gathers the pooled gradient into a full-size
gradient g at the LRN's output and writes it, then the LRN's reads g, the saved LRN output y and z and writes
dz. Here one kernel does both, on lrn_window.py's tile (BLOCK_P pixels x one tower's channels of
channels-last maps): each pixel gathers g from the at most 2 x 2 pooling windows whose argmax points at it
(pool_kernels' rule and order), and y = a d^-beta is recomputed from z, whose d the backward needs anyway. So
g is never written or read, y is neither read nor kept from the forward, and one launch is saved.

Every value the separate kernels round to the maps' dtype on the way through memory (g, y) is rounded here
too, so in bf16 the fused backward computes what the pair computes (the tests compare them).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..maps import memory_format_of
from .lrn_window import _conv_output, _launch, _relu, _row_tile, _store_input_grad, _window, bias_grad, bias_parts
from .pool import gathered_grad, pooled_shape

TILE = 1024  # elements per program, as the LRN's gather form (lrn.WINDOW_TILE); 4 warps


@triton.jit
def relu_lrn_pool_backward_kernel(z_ptr, b_ptr, g_ptr, arg_ptr, dz_ptr, part_ptr, pixels, hw, width, out_h, out_w,
                                  row, channels, sgn, sgc, sgh, sgw, san, sac, sah, saw, alpha_n, beta, k,
                                  BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, HAS_BIAS: tl.constexpr,
                                  COMPUTE: tl.constexpr):
    at, c, mask = _row_tile(pixels, row, channels, BLOCK_P, BLOCK_C)
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    image = (p // hw).to(tl.int64)
    ih = (p % hw) // width
    iw = p % width
    # The pool's backward (pool_kernels' rule and order of adds), for this tower's channels among all the maps'
    g = gathered_grad(g_ptr, arg_ptr, image, ih, iw, (tl.program_id(1) * channels + c).to(tl.int64), mask, out_h,
                      out_w, sgn, sgc, sgh, sgw, san, sac, sah, saw, False, COMPUTE)
    g = g.to(dz_ptr.dtype.element_ty).to(COMPUTE)  # as the pool's backward stores it
    # The LRN's backward (lrn_window.relu_lrn_backward_window_kernel), with y recomputed.
    a = _relu(_conv_output(z_ptr, b_ptr, at, c, mask, channels, HAS_BIAS, COMPUTE))
    d = k + alpha_n * _window(a * a, c, channels, BLOCK_C)
    scale = tl.exp(-beta * tl.log(d))
    y = (a * scale).to(dz_ptr.dtype.element_ty).to(COMPUTE)  # as the LRN's forward stores it
    _store_input_grad(dz_ptr, part_ptr, at, c, mask, a, d, scale, g, y, row, channels, alpha_n, beta, BLOCK_C,
                      HAS_BIAS)


def relu_lrn_pool_backward(grad: torch.Tensor, z: torch.Tensor, argmax: torch.Tensor, towers: int, alpha_n: float,
                           beta: float, k: float, bias: torch.Tensor | None = None, tile: int | None = None,
                           num_warps: int = 4) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dL/dz, dL/dbias or None without a bias) of max_pool(LRN(relu(z + bias))) for channels-last z, from the
    gradient at the pooled maps (any layout) and the pool's int8 argmax (pool.max_pool_forward's)."""
    if memory_format_of(z) != torch.channels_last:
        raise ValueError("the fused ReLU + LRN + max-pool backward needs channels-last maps: run the LRN and the "
                         "pool apart for contiguous ones.")
    if argmax.dtype != torch.int8 or tuple(argmax.shape) != pooled_shape(z) or grad.shape != argmax.shape:
        raise ValueError(f"the argmax and the gradient must have the pooled shape {pooled_shape(z)} (the argmax "
                         f"int8), not {argmax.dtype} {tuple(argmax.shape)} and {tuple(grad.shape)}.")
    _, _, h, w = z.shape
    grid, (pixels, channels, per_tower), meta = _launch("gather", z, towers, tile or TILE)
    dz, parts = torch.empty_like(z), bias_parts(z, bias, grid[0])
    relu_lrn_pool_backward_kernel[grid](
        z, z if bias is None else bias, grad, argmax, dz, dz if parts is None else parts, pixels, h * w, w,
        argmax.shape[2], argmax.shape[3], channels, per_tower, *grad.stride(), *argmax.stride(), alpha_n, beta, k,
        HAS_BIAS=bias is not None, **meta, num_warps=num_warps)
    return dz, bias_grad(parts, bias)
