"""ReLU + per-tower LRN as one `torch.library` custom op with its autograd formula (Triton kernels, lrn_kernels.py).

As a custom op with a fake (shape-only) implementation, torch.compile and CUDA graphs take it whole, with no
graph break: `torch.ops.alexnet2gpu.relu_lrn(z, towers, alpha, beta, k)`. Its backward is a custom op too.
The op runs where Triton does: CUDA tensors, or any tensor with TRITON_INTERPRET=1 (the CPU tests).

Eager calls take `fused_relu_lrn`, which runs the same kernels through a plain autograd.Function: torch.library's
dispatch costs host time on every call, and an eager bf16 step on a GPU waits for its host (docs/BENCHMARKS.md).
"""
from __future__ import annotations

import importlib.util

import torch

from .maps import dense

WINDOW = 5  # lrn_kernels.SIZE, without importing Triton


# Looked up once, at import: torch.compile (torch 2.11) cannot trace importlib's lookup, and a call per LRN
# split every compiled graph at each LRN.
TRITON_AVAILABLE = importlib.util.find_spec("triton") is not None


def _kernels():
    from . import lrn_kernels  # Triton is imported on first use only
    return lrn_kernels


@torch.library.custom_op("alexnet2gpu::relu_lrn", mutates_args=())
def relu_lrn(z: torch.Tensor, towers: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """relu(z) then LRN over each tower's channels (window 5), for N x (towers*C) x H x W maps."""
    return _kernels().relu_lrn_forward(dense(z), towers, alpha, beta, k)


@relu_lrn.register_fake
def _(z, towers, alpha, beta, k):
    return torch.empty_like(dense(z))


@torch.library.custom_op("alexnet2gpu::relu_lrn_backward", mutates_args=())
def relu_lrn_backward(grad: torch.Tensor, z: torch.Tensor, y: torch.Tensor, towers: int, alpha: float, beta: float,
                      k: float) -> torch.Tensor:
    """dL/dz from the gradient at the op's output y, its input z and y itself."""
    return _kernels().relu_lrn_backward(grad, dense(z), y, towers, alpha, beta, k)


@relu_lrn_backward.register_fake
def _(grad, z, y, towers, alpha, beta, k):
    return torch.empty_like(dense(z))


def _setup_context(ctx, inputs, output):
    z, towers, alpha, beta, k = inputs
    # The output too: with y_j = a_j d_j^-beta each neighbour's backward term is a division, not a power. In a
    # network y is kept anyway (the max-pool after the LRN saves it), so this costs no memory there.
    ctx.save_for_backward(z, output)
    ctx.params = (towers, alpha, beta, k)


def _backward(ctx, grad):
    z, y = ctx.saved_tensors
    return relu_lrn_backward(grad, z, y, *ctx.params), None, None, None, None


relu_lrn.register_autograd(_backward, setup_context=_setup_context)


class _EagerReluLRN(torch.autograd.Function):
    """relu_lrn's kernels and formula without torch.library's dispatch, for eager calls."""

    @staticmethod
    def forward(ctx, z, towers, alpha, beta, k):
        z = dense(z)
        y = _kernels().relu_lrn_forward(z, towers, alpha, beta, k)
        ctx.save_for_backward(z, y)  # see _setup_context
        ctx.params = (towers, alpha, beta, k)
        return y

    @staticmethod
    def backward(ctx, grad):
        z, y = ctx.saved_tensors
        return _kernels().relu_lrn_backward(grad, z, y, *ctx.params), None, None, None, None


def fused_relu_lrn(z: torch.Tensor, towers: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """relu then the per-tower LRN: the custom op while torch.compile traces, else the same kernels called
    directly."""
    if torch.compiler.is_compiling():
        return relu_lrn(z, towers, alpha, beta, k)
    return _EagerReluLRN.apply(z, towers, alpha, beta, k)
