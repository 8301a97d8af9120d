"""ReLU + per-tower LRN + the overlapping max-pool as one autograd step (conv1's and conv2's blocks, paper §3.3-3.4).

The forward runs the two ops' own kernels in turn (lrn_kernels' ReLU + LRN, then pool_kernels' max-pool); the
backward is one kernel (kernels/lrn_pool.py), which gathers the pool's gradient and applies
the LRN's in one pass. Only z, the bias and the pool's one-byte argmax are kept for the backward: the LRN's
output is freed as soon as it is pooled, where apart it was kept for both backwards.

Eager calls go through a plain autograd.Function (one per block where apart there were two, each paying host
time on every call); torch.compile traces the `alexnet2gpu::relu_lrn_max_pool` custom op, whose backward is a
custom op too. Used where both fast kernels run (`fuses`): channels-last maps on CUDA, or any device with
TRITON_INTERPRET=1 (the CPU tests). Elsewhere the two ops run apart.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch

from .kernels.sizes import WINDOW
from .lrn import runs_triton
from .lrn_op import _kernels as _lrn_kernels, _vector
from .maps import dense, memory_format_of
from .pool import _kernels as _pool_kernels, uses_triton


@functools.cache  # an import statement per call costs host time on every eager launch
def _kernels():
    from .kernels import lrn_pool as lrn_pool_kernels  # Triton is imported on first use only
    return lrn_pool_kernels


def fuses(z: torch.Tensor, lrn_impl: str) -> bool:
    """Whether the ReLU + LRN + max-pool of maps `z` runs as this one step: the Triton LRN and max-pool both run
    on z (lrn_impl "auto" on CUDA, or "triton"), and z is channels-last (the fused backward's tile)."""
    return (runs_triton(lrn_impl, z.device) and uses_triton(z)
            and memory_format_of(z) == torch.channels_last)


def _forward(z: torch.Tensor, bias: torch.Tensor | None, towers: int, alpha: float, beta: float,
             k: float) -> tuple[torch.Tensor, torch.Tensor]:
    y = _lrn_kernels().relu_lrn_forward(z, towers, alpha, beta, k, bias=bias)
    return _pool_kernels().max_pool_forward(y)


def _backward(grad, z, argmax, bias, towers, alpha, beta, k):
    return _kernels().relu_lrn_pool_backward(grad, z, argmax, towers, alpha / WINDOW, beta, k, bias=bias)


@torch.library.custom_op("alexnet2gpu::relu_lrn_max_pool", mutates_args=())
def relu_lrn_max_pool_op(z: torch.Tensor, towers: int, alpha: float, beta: float, k: float,
                         bias: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(max_pool(LRN(relu(z + bias))), the pool's int8 argmax) for channels-last N x (towers*C) x H x W maps."""
    return _forward(dense(z), _vector(bias), towers, alpha, beta, k)


@relu_lrn_max_pool_op.register_fake
def _(z, towers, alpha, beta, k, bias=None):
    return _pool_kernels().empty_outputs(dense(z))


@torch.library.custom_op("alexnet2gpu::relu_lrn_max_pool_backward", mutates_args=())
def relu_lrn_max_pool_backward(grad: torch.Tensor, z: torch.Tensor, argmax: torch.Tensor, towers: int, alpha: float,
                               beta: float, k: float,
                               bias: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(dL/dz, dL/dbias) from the gradient at the pooled maps; without a bias the second is an empty tensor."""
    dz, dbias = _backward(grad, dense(z), argmax, _vector(bias), towers, alpha, beta, k)
    return dz, z.new_empty(0) if dbias is None else dbias


@relu_lrn_max_pool_backward.register_fake
def _(grad, z, argmax, towers, alpha, beta, k, bias=None):
    return torch.empty_like(dense(z)), z.new_empty(0) if bias is None else torch.empty_like(bias)


def _setup_context(ctx, inputs, output):
    z, towers, alpha, beta, k, bias = inputs
    ctx.save_for_backward(z, output[1], bias)
    ctx.mark_non_differentiable(output[1])
    ctx.params = (towers, alpha, beta, k)


def _op_backward(ctx, grad, _grad_argmax):
    z, argmax, bias = ctx.saved_tensors
    dz, dbias = relu_lrn_max_pool_backward(grad, z, argmax, *ctx.params, bias)
    return dz, None, None, None, None, None if bias is None else dbias


relu_lrn_max_pool_op.register_autograd(_op_backward, setup_context=_setup_context)


class _EagerReluLRNMaxPool(torch.autograd.Function):
    """The op's kernels and formula without torch.library's dispatch, for eager calls."""

    @staticmethod
    def forward(ctx, z, bias, towers, alpha, beta, k):
        z, bias = dense(z), _vector(bias)
        pooled, argmax = _forward(z, bias, towers, alpha, beta, k)
        ctx.save_for_backward(z, argmax, bias)
        ctx.params = (towers, alpha, beta, k)
        return pooled

    @staticmethod
    def backward(ctx, grad):
        z, argmax, bias = ctx.saved_tensors
        dz, dbias = _backward(grad, z, argmax, bias, *ctx.params)
        return dz, dbias, None, None, None, None


def relu_lrn_max_pool(z: torch.Tensor, towers: int, alpha: float, beta: float, k: float,
                      bias: torch.Tensor | None = None) -> torch.Tensor:
    """max_pool(LRN(relu(z + bias))) per tower, 3x3 windows at stride 2: the custom op while torch.compile traces,
    else the same kernels called directly. `bias` (optional): the convolution's, which then ran without it."""
    if torch.compiler.is_compiling():
        return relu_lrn_max_pool_op(z, towers, alpha, beta, k, bias)[0]
    return _EagerReluLRNMaxPool.apply(z, bias, towers, alpha, beta, k)
