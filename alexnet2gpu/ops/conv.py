"""conv1's forms, each the same maths as the one ordinary convolution (paper §3.5: 96 kernels of 11x11x3,
stride 4):

- `conv2d_chunked_weight_grad`, a CPU speed fix. On a small CPU, oneDNN's backward-weights kernel for conv1
  does not scale with the batch: at batch 128 it takes far longer than twice its time at batch 64, while
  every other layer scales linearly. Summing the weight gradients of slices of at most `CHUNK_IMAGES`
  images avoids that (figures: docs/benchmarks.md). Only the order
  of the gradient's sum changes (rounding).
- `conv1_space_to_depth`, for GPUs. With 3 input maps, a GPU's convolution kernels pad the channels (to 8
  on cuDNN's tensor-core paths) and waste most of the work on an 11x11 window. Cut into 4x4 blocks of
  pixels (the stride), the image becomes 48 maps on a 57x57 grid, and the kernel, padded with zeros from
  11x11 to 12x12, becomes a 3x3 kernel over those maps: a stride-1 convolution of a common shape.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .maps import memory_format_of

CHUNK_IMAGES = 32


class _BatchChunkedWeightGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding, ctx.has_bias = stride, padding, bias is not None
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        args = (list(ctx.stride), list(ctx.padding), [1, 1], False, [0, 0], 1)
        bias_sizes = [weight.shape[0]] if ctx.has_bias else None
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(grad, x, weight, bias_sizes, *args, [True, False, False])[0]
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            for g, xs in zip(grad.split(CHUNK_IMAGES), x.split(CHUNK_IMAGES)):
                _, gw, gb = torch.ops.aten.convolution_backward(g, xs, weight, bias_sizes, *args,
                                                                [False, True, ctx.has_bias])
                grad_w = gw if grad_w is None else grad_w.add_(gw)
                grad_b = gb if grad_b is None else (grad_b.add_(gb) if gb is not None else None)
        return grad_x, grad_w, grad_b, None, None


def conv2d_chunked_weight_grad(x: torch.Tensor, conv: torch.nn.Conv2d, with_bias: bool = True) -> torch.Tensor:
    """`conv(x)` (groups=1, no dilation), without its bias unless `with_bias`; on the CPU its weight gradient is
    summed over batch slices."""
    bias = conv.bias if with_bias else None
    # Exporting (export.py) traces the plain convolution: the batch is symbolic and no gradient is taken.
    if torch.compiler.is_exporting() or x.device.type != "cpu" or x.shape[0] <= CHUNK_IMAGES or conv.groups != 1:
        return conv(x) if with_bias else F.conv2d(x, conv.weight, None, conv.stride, conv.padding)
    return _BatchChunkedWeightGrad.apply(x, conv.weight, bias, conv.stride, conv.padding)


def _space_to_depth(t: torch.Tensor, stride: int, side: int, dtype: torch.dtype,
                    layout: torch.memory_format) -> torch.Tensor:
    """N x C x H x W (H, W whole numbers of blocks, at most side * stride) as N x (C * stride^2) x side x side:
    pixel (row, column) of block (i, j) of map c lands in map c*stride^2 + row*stride + column at (i, j), blocks
    past t's right and bottom edges are zeros. Written in one copy, in `dtype` and in `layout`'s memory order:
    on an eager GPU step every call and launch here costs host time, which the step waits for."""
    n, c, h, w = t.shape
    full_h, full_w = h // stride, w // stride
    pieces = t.view(n, c, full_h, stride, full_w, stride)  # n, c, i, row, j, column
    new = torch.zeros if (full_h, full_w) != (side, side) else torch.empty  # zeros only where t ends first
    if layout == torch.channels_last:  # memory: n, i, j, c, row, column
        out = new(n, side, side, c, stride, stride, dtype=dtype, device=t.device)
        out[:, :full_h, :full_w] = pieces.permute(0, 2, 4, 1, 3, 5)
        return out.view(n, side, side, c * stride * stride).permute(0, 3, 1, 2)
    out = new(n, c, stride, stride, side, side, dtype=dtype, device=t.device)  # memory: n, c, row, column, i, j
    out[..., :full_h, :full_w] = pieces.permute(0, 1, 3, 5, 2, 4)
    return out.view(n, c * stride * stride, side, side)


def conv1_space_to_depth(x: torch.Tensor, pad: int, conv: torch.nn.Conv2d, with_bias: bool = True) -> torch.Tensor:
    """`conv(x)` (without its bias unless `with_bias`) after `pad` zero rows and columns on the right and bottom,
    computed as a stride-1 convolution of x's stride x stride pixel blocks (C x stride^2 maps, channel
    c*stride^2 + row*stride + column) with the kernel, zero-padded to whole blocks, cut the same way. The blocks
    of the image and of the kernel are each written in one pass, in the layout of conv's weight and, under
    autocast, already in autocast's dtype."""
    (k, _), (stride, _) = conv.kernel_size, conv.stride
    h, w = x.shape[2:]
    out = (h + pad - k) // stride + 1
    taps = -(-k // stride)  # kernel blocks per side: 11 -> 3
    grid = out - 1 + taps  # image blocks per side the output reads: 55 -> 57
    if h % stride or w % stride:  # a crop that is no whole number of blocks (227): pad it to one first
        x = F.pad(x, (0, -w % stride, 0, -h % stride))
    if max(x.shape[2:]) > grid * stride:  # image rows no output reads (none at 224 or 227)
        x = x[:, :, :grid * stride, :grid * stride]
    dtype = x.dtype
    if x.is_floating_point() and torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
    layout = memory_format_of(conv.weight)  # the stack's layout (channels-last by default)
    weight = F.pad(conv.weight, (0, taps * stride - k, 0, taps * stride - k))  # zeros: 11x11 -> 12x12
    maps, kernel = _space_to_depth(x, stride, grid, dtype, layout), _space_to_depth(weight, stride, taps, dtype, layout)
    return F.conv2d(maps, kernel, conv.bias if with_bias else None)
