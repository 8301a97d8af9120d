"""conv1 with its weight gradient accumulated over slices of the batch (a CPU speed fix, same maths).

On a small CPU, oneDNN's backward-weights kernel for conv1 (96 filters, 11x11, stride 4, 3 input maps)
does not scale with the batch: at batch 128 it takes far longer than twice its time at batch 64, while
every other layer scales linearly. Summing the weight gradients of slices of at most `CHUNK_IMAGES`
images avoids that (figures: docs/BENCHMARKS.md, "conv1's weight gradient over slices"). The forward is
the one ordinary convolution; only the order of the gradient's sum changes (rounding).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

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


def conv2d_chunked_weight_grad(x: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    """`conv(x)` (groups=1, no dilation); on the CPU its weight gradient is summed over batch slices."""
    # Exporting (export.py) traces the plain convolution: the batch is symbolic and no gradient is taken.
    if torch.compiler.is_exporting() or x.device.type != "cpu" or x.shape[0] <= CHUNK_IMAGES or conv.groups != 1:
        return conv(x)
    return _BatchChunkedWeightGrad.apply(x, conv.weight, conv.bias, conv.stride, conv.padding)
