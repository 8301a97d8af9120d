"""ReLU + per-tower LRN as one `torch.library` custom op with its autograd formula (Triton kernels, kernels/lrn.py).

As a custom op with a fake (shape-only) implementation, torch.compile and CUDA graphs take it whole, with no
graph break: `torch.ops.alexnet2gpu.relu_lrn(z, towers, alpha, beta, k)`. Its backward is a custom op too.
The op runs where Triton does: CUDA tensors, or any tensor with TRITON_INTERPRET=1 (the CPU tests).

Eager calls take `fused_relu_lrn`, which runs the same kernels through a plain autograd.Function: torch.library's
dispatch costs host time on every call, and an eager bf16 step on a GPU waits for its host (docs/benchmarks.md).
"""
from __future__ import annotations

import functools
import importlib.util
from typing import Optional

import torch

from .maps import dense

# Looked up once, at import: torch.compile (torch 2.11) cannot trace importlib's lookup, and a call per LRN
# split every compiled graph at each LRN.
TRITON_AVAILABLE = importlib.util.find_spec("triton") is not None


@functools.cache  # an import statement per call costs host time on every eager launch
def _kernels():
    from .kernels import lrn as lrn_kernels  # Triton is imported on first use only
    return lrn_kernels


@torch.library.custom_op("alexnet2gpu::relu_lrn", mutates_args=())
def relu_lrn(z: torch.Tensor, towers: int, alpha: float, beta: float, k: float,
             bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """relu(z + bias) then LRN over each tower's channels (window 5), for N x (towers*C) x H x W maps. `bias`: the
    convolution's, which then ran without it (the kernels add it as they read z)."""
    return _kernels().relu_lrn_forward(dense(z), towers, alpha, beta, k, bias=_vector(bias))


@relu_lrn.register_fake
def _(z, towers, alpha, beta, k, bias=None):
    return torch.empty_like(dense(z))


@torch.library.custom_op("alexnet2gpu::relu_lrn_backward", mutates_args=())
def relu_lrn_backward(grad: torch.Tensor, z: torch.Tensor, y: torch.Tensor, towers: int, alpha: float, beta: float,
                      k: float, bias: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(dL/dz, dL/dbias) from the gradient at the op's output y, its input z and y itself; without a bias the
    second is an empty tensor (an op returns tensors, never None)."""
    dz, dbias = _kernels().relu_lrn_backward(grad, dense(z), y, towers, alpha, beta, k, bias=_vector(bias))
    return dz, z.new_empty(0) if dbias is None else dbias


@relu_lrn_backward.register_fake
def _(grad, z, y, towers, alpha, beta, k, bias=None):
    return torch.empty_like(dense(z)), z.new_empty(0) if bias is None else torch.empty_like(bias)


def _vector(bias: torch.Tensor | None) -> torch.Tensor | None:
    return None if bias is None else bias.contiguous()


def _setup_context(ctx, inputs, output):
    z, towers, alpha, beta, k, bias = inputs
    # The output too: with y_j = a_j d_j^-beta each neighbour's backward term is a division, not a power. In a
    # network y is kept anyway (the max-pool after the LRN saves it), so this costs no memory there.
    ctx.save_for_backward(z, output, bias)
    ctx.params = (towers, alpha, beta, k)


def _backward(ctx, grad):
    z, y, bias = ctx.saved_tensors
    dz, dbias = relu_lrn_backward(grad, z, y, *ctx.params, bias)
    return dz, None, None, None, None, None if bias is None else dbias


relu_lrn.register_autograd(_backward, setup_context=_setup_context)


class _EagerReluLRN(torch.autograd.Function):
    """relu_lrn's kernels and formula without torch.library's dispatch, for eager calls."""

    @staticmethod
    def forward(ctx, z, bias, towers, alpha, beta, k):
        z, bias = dense(z), _vector(bias)
        y = _kernels().relu_lrn_forward(z, towers, alpha, beta, k, bias=bias)
        ctx.save_for_backward(z, y, bias)  # see _setup_context
        ctx.params = (towers, alpha, beta, k)
        return y

    @staticmethod
    def backward(ctx, grad):
        z, y, bias = ctx.saved_tensors
        dz, dbias = _kernels().relu_lrn_backward(grad, z, y, *ctx.params, bias=bias)
        return dz, dbias, None, None, None, None


def fused_relu_lrn(z: torch.Tensor, towers: int, alpha: float, beta: float, k: float,
                   bias: torch.Tensor | None = None) -> torch.Tensor:
    """relu(z + bias) then the per-tower LRN: the custom op while torch.compile traces, else the same kernels
    called directly. `bias` (optional): the convolution's, which then ran without it."""
    if torch.compiler.is_compiling():
        return relu_lrn(z, towers, alpha, beta, k, bias)
    return _EagerReluLRN.apply(z, bias, towers, alpha, beta, k)
