"""The paper's overlapping max-pool (3x3 windows, stride 2; paper §3.4) as a `torch.library` custom op, for CUDA
in eager mode and under torch.compile.

Where Triton runs (CUDA tensors, or any tensor with TRITON_INTERPRET=1: the CPU tests), the op's forward and
backward are the Triton kernels of kernels/pool.py, which keep each window's argmax in one byte; elsewhere
they are ATen's own kernels (an int64 flat index per output). Either way the op returns
(pooled maps, argmax), and its backward reads the argmax's dtype to pick the matching kernel.

As a custom op with fake implementations, the compiler keeps it whole (Inductor's own max-pool lowering, after
the fused ReLU + LRN op, ran several times slower than ATen's: docs/benchmarks.md) and fuses everything around
it. Eager CUDA calls run the same Triton kernels through a plain autograd.Function (`overlapping_max_pool`),
which spares torch.library's dispatch on every call; CPU code calls F.max_pool2d directly, unchanged.
"""
from __future__ import annotations

import functools
import importlib.util
import os

import torch
import torch.nn.functional as F

from .kernels.sizes import FLOATS, POOL_KERNEL, POOL_STRIDE
from .maps import dense

KERNEL, STRIDE = POOL_KERNEL, POOL_STRIDE  # z = 3, s = 2: windows overlap by one pixel (paper §3.4)

# Looked up once, at import: torch.compile cannot trace importlib's lookup (a call per pool would split every
# compiled graph there). Triton reads TRITON_INTERPRET when its kernels are defined, so once is enough here too.
TRITON_AVAILABLE = importlib.util.find_spec("triton") is not None
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


@functools.cache  # an import statement per call costs host time on every eager launch
def _kernels():
    from .kernels import pool as pool_kernels  # Triton is imported on first use only
    return pool_kernels


def uses_triton(x: torch.Tensor) -> bool:
    """Whether the op runs the Triton kernels on x: Triton present and able to run on x's device, and maps the
    kernels take (N x C x H x W floats of at least 3x3; ATen reports anything else)."""
    return (TRITON_AVAILABLE and (x.is_cuda or INTERPRETED) and x.dim() == 4
            and x.dtype in FLOATS and x.shape[2] >= KERNEL and x.shape[3] >= KERNEL)


@torch.library.custom_op("alexnet2gpu::max_pool", mutates_args=())
def max_pool(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The pooled maps and, for the backward, each window's argmax: int8 window position (Triton) or int64
    flat input index (ATen)."""
    if uses_triton(x):
        return _kernels().max_pool_forward(dense(x))
    return torch.ops.aten.max_pool2d_with_indices.default(x, [KERNEL, KERNEL], [STRIDE, STRIDE])


@max_pool.register_fake
def _(x):
    if uses_triton(x):
        return _kernels().empty_outputs(dense(x))
    return torch.ops.aten.max_pool2d_with_indices.default(x, [KERNEL, KERNEL], [STRIDE, STRIDE])


@torch.library.custom_op("alexnet2gpu::max_pool_backward", mutates_args=())
def max_pool_backward(grad: torch.Tensor, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """dL/dx: the Triton gather for an int8 argmax, ATen's backward for int64 indices."""
    if indices.dtype == torch.int8:
        return _kernels().max_pool_backward(grad, dense(x), indices)
    return torch.ops.aten.max_pool2d_with_indices_backward.default(
        grad, x, [KERNEL, KERNEL], [STRIDE, STRIDE], [0, 0], [1, 1], False, indices)


@max_pool_backward.register_fake
def _(grad, x, indices):
    if indices.dtype == torch.int8:
        return _kernels().empty_input_grad(dense(x))
    return torch.empty_like(x)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(inputs[0], output[1])  # x only for its shape and layout on the Triton path
    ctx.mark_non_differentiable(output[1])


def _backward(ctx, grad, _grad_indices):
    x, indices = ctx.saved_tensors
    return max_pool_backward(grad, x, indices)


max_pool.register_autograd(_backward, setup_context=_setup_context)


class _EagerTritonMaxPool(torch.autograd.Function):
    """The Triton max-pool without torch.library's dispatch, whose host time an eager step on a GPU pays on
    every call (docs/benchmarks.md); the op is for torch.compile."""

    @staticmethod
    def forward(ctx, x):
        x = dense(x)
        y, argmax = _kernels().max_pool_forward(x)
        ctx.save_for_backward(x, argmax)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, argmax = ctx.saved_tensors
        return _kernels().max_pool_backward(grad, x, argmax)


def overlapping_max_pool(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-2 max-pool. On CUDA: the custom op while torch.compile traces; in eager mode the Triton
    kernels directly (when Triton is installed); otherwise, and on the CPU, F.max_pool2d."""
    if x.is_cuda and torch.compiler.is_compiling():
        return max_pool(x)[0]
    if x.is_cuda and uses_triton(x):
        return _EagerTritonMaxPool.apply(x)
    return F.max_pool2d(x, kernel_size=KERNEL, stride=STRIDE)
