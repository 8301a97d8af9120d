"""The paper's overlapping max-pool (3x3 windows, stride 2; paper §3.4) as a `torch.library` custom op whose
forward and backward are ATen's own kernels, for torch.compile on CUDA.

Inductor otherwise lowers max-pool into its own kernels, and after the fused ReLU + LRN op those ran several
times slower than ATen's (docs/BENCHMARKS.md). As custom ops with fake implementations, the compiler keeps them
whole and fuses everything around them. Eager code calls F.max_pool2d directly (`overlapping_max_pool`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

KERNEL, STRIDE = 3, 2  # z = 3, s = 2: windows overlap by one pixel (paper §3.4)


@torch.library.custom_op("alexnet2gpu::max_pool", mutates_args=())
def max_pool(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The pooled maps and, for the backward, the flat index of each window's maximum."""
    return torch.ops.aten.max_pool2d_with_indices.default(x, [KERNEL, KERNEL], [STRIDE, STRIDE])


@max_pool.register_fake
def _(x):
    return torch.ops.aten.max_pool2d_with_indices.default(x, [KERNEL, KERNEL], [STRIDE, STRIDE])


@torch.library.custom_op("alexnet2gpu::max_pool_backward", mutates_args=())
def max_pool_backward(grad: torch.Tensor, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.max_pool2d_with_indices_backward.default(
        grad, x, [KERNEL, KERNEL], [STRIDE, STRIDE], [0, 0], [1, 1], False, indices)


@max_pool_backward.register_fake
def _(grad, x, indices):
    return torch.empty_like(x)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(inputs[0], output[1])
    ctx.mark_non_differentiable(output[1])


def _backward(ctx, grad, _grad_indices):
    x, indices = ctx.saved_tensors
    return max_pool_backward(grad, x, indices)


max_pool.register_autograd(_backward, setup_context=_setup_context)


def overlapping_max_pool(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-2 max-pool: the custom op while torch.compile traces a CUDA model, else F.max_pool2d."""
    if x.is_cuda and torch.compiler.is_compiling():
        return max_pool(x)[0]
    return F.max_pool2d(x, kernel_size=KERNEL, stride=STRIDE)
