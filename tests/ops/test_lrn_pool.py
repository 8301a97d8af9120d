"""ReLU + LRN + max-pool as one step (ops/lrn_pool.py, its backward kernel in ops/kernels/lrn_pool.py).

Without a GPU, conftest.py sets TRITON_INTERPRET=1 and the kernels run on small CPU tensors; with one, on the GPU.
The fused backward must compute exactly what the LRN's and the pool's backward kernels compute in turn (it rounds
what they store), and both must match float64 autograd of relu, the LRN formula and F.max_pool2d. A mismatch
means a pooling window routed to the wrong pixel (floor mode, overlap, ties), a recomputed LRN output unlike the
forward's, or a tower edge crossed.
"""
import pytest
import torch
import torch.nn.functional as F

from alexnet2gpu.model.layers import LRN_SIZE
from alexnet2gpu.ops import pool as pool_op
from alexnet2gpu.ops.kernels import lrn as lrn_kernels, pool as pool_kernels
from alexnet2gpu.ops.kernels.lrn_pool import relu_lrn_pool_backward
from alexnet2gpu.ops.lrn import lrn_reference
from alexnet2gpu.ops.lrn_pool import fuses, relu_lrn_max_pool, relu_lrn_max_pool_op
from tests.helpers.parity import assert_compiles_whole, relative_error

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
STRONG = (0.5, 0.75, 2.0)  # a large alpha so the window's effect is far above rounding
FLOAT64_TOLERANCE = 1e-7 if DEVICE == "cuda" else 1e-13  # Triton's exp and log on a GPU: about fp32's accuracy


def maps(towers: int, channels: int, dtype, h: int = 7, w: int = 9, n: int = 2) -> torch.Tensor:
    z = torch.randn(n, towers * channels, h, w, device=DEVICE) * 3
    return z.to(dtype).contiguous(memory_format=torch.channels_last)


def reference(z: torch.Tensor, bias: torch.Tensor, towers: int) -> torch.Tensor:
    """max_pool(LRN(relu(z + bias))) per tower, in z's dtype (float64 in the tests)."""
    a = torch.relu(z + bias.view(1, -1, 1, 1))
    y = torch.cat([lrn_reference(t, LRN_SIZE, *STRONG) for t in a.chunk(towers, dim=1)], dim=1)
    return F.max_pool2d(y, 3, 2)


# On a GPU the compiler may contract multiply-adds in one kernel and not in another, so the fused kernels are
# compared with the pair to rounding there; the interpreter runs both as written, and there they agree exactly.
ROUNDING = {torch.float64: 1e-12, torch.float32: 1e-6, torch.bfloat16: 1e-2}


def assert_same(got: torch.Tensor, want: torch.Tensor) -> None:
    if DEVICE == "cpu":
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    else:
        assert relative_error(got.nan_to_num(), want.nan_to_num()) < ROUNDING[want.dtype]


def apart(z, bias, towers, grad):
    """The backward as two kernels in turn: the pool's, then the LRN's (what the fused kernel replaces)."""
    y = lrn_kernels.relu_lrn_forward(z, towers, *STRONG, bias=bias)
    pooled, argmax = pool_kernels.max_pool_forward(y)
    g = pool_kernels.max_pool_backward(grad, y, argmax)
    return (pooled, argmax) + lrn_kernels.relu_lrn_backward(g, z, y, towers, *STRONG, bias=bias)


# 7 x 9: every row and column in a window; 8 x 8: the last row and column in none (floor mode)
@pytest.mark.parametrize("dtype,towers,channels,h,w", [(torch.float64, 2, 9, 7, 9), (torch.bfloat16, 2, 9, 7, 9),
                                                       (torch.float32, 1, 6, 8, 8), (torch.bfloat16, 1, 6, 8, 8)])
def test_the_fused_backward_is_the_two_kernels_in_turn(dtype, towers, channels, h, w):
    """dz bit for bit (NaN included), in every dtype (to rounding on a GPU); the bias gradient to rounding (its
    tiles differ)."""
    z = maps(towers, channels, dtype, h, w)
    z[0, 1, 2, 3] = float("nan")
    bias = (torch.randn(towers * channels, device=DEVICE) * 3).to(dtype)
    pooled, argmax, dz, dbias = apart(z, bias, towers, grad := torch.randn(pool_kernels.pooled_shape(z),
                                                                         device=DEVICE).to(dtype))
    fused_dz, fused_dbias = relu_lrn_pool_backward(grad, z, argmax, towers, STRONG[0] / LRN_SIZE, *STRONG[1:],
                                                   bias=bias, tile=256)
    assert_same(fused_dz, dz)
    assert fused_dz.is_contiguous(memory_format=torch.channels_last)
    assert fused_dbias.dtype == dtype and fused_dbias.shape == bias.shape
    torch.testing.assert_close(fused_dbias, dbias, equal_nan=True)


@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, FLOAT64_TOLERANCE), (torch.float32, 1e-6)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_forward_and_backward_match_the_formula(dtype, tolerance, with_bias):
    """The pooled maps and the gradients of z and the bias against float64 autograd; the top rows are constant
    in each map, so windows there tie (the first maximum takes the gradient, as in ATen)."""
    z = maps(2, 9, dtype)
    z[:, :, :3] = 0
    z.requires_grad_()
    bias = (torch.randn(18, device=DEVICE, dtype=dtype) * 3).requires_grad_() if with_bias else None
    pooled = relu_lrn_max_pool(z, 2, *STRONG, bias)
    z64 = z.detach().double().requires_grad_()
    b64 = (bias.detach().double() if with_bias else torch.zeros(18, dtype=torch.float64, device=DEVICE)).requires_grad_()
    want = reference(z64, b64, 2)
    assert pooled.dtype == dtype and pooled.is_contiguous(memory_format=torch.channels_last)
    assert relative_error(pooled, want) < tolerance
    grad = torch.randn_like(pooled)
    inputs = (z, bias) if with_bias else (z,)
    got = torch.autograd.grad(pooled, inputs, grad)
    wanted = torch.autograd.grad(want, (z64, b64) if with_bias else (z64,), grad.double())
    for a, b in zip(got, wanted):
        assert relative_error(a, b) < tolerance * 10


def test_the_eager_path_is_the_op_and_keeps_no_lrn_output():
    """Eager calls take a plain autograd.Function with the op's numbers; it keeps z, the int8 argmax and the
    bias for the backward, not the LRN's full-size output."""
    z = maps(2, 4, torch.float64, 5, 5).requires_grad_()
    bias = (torch.randn(8, dtype=torch.float64, device=DEVICE) * 3).requires_grad_()
    pooled = relu_lrn_max_pool(z, 2, *STRONG, bias)
    op_pooled, argmax = relu_lrn_max_pool_op(z, 2, *STRONG, bias)
    assert torch.equal(pooled, op_pooled) and pooled.grad_fn.name() == "_EagerReluLRNMaxPoolBackward"
    saved = pooled.grad_fn.saved_tensors
    assert [t.dtype for t in saved] == [torch.float64, torch.int8, torch.float64] and torch.equal(saved[0], z)
    assert torch.equal(saved[1], argmax)
    grad = torch.randn_like(pooled)
    eager = torch.autograd.grad(pooled, (z, bias), grad)
    op = torch.autograd.grad(op_pooled, (z, bias), grad)
    assert all(torch.equal(a, b) for a, b in zip(eager, op))


def test_compiles_without_a_graph_break():
    z = maps(2, 4, torch.float32, 5, 5).requires_grad_()
    bias = torch.randn(8, device=DEVICE).requires_grad_()
    assert_compiles_whole(lambda a, b: relu_lrn_max_pool(a, 2, *STRONG, b) * 2.0, z, bias)


def test_where_it_fuses_and_what_the_kernel_refuses(monkeypatch):
    z = maps(2, 4, torch.float32, 5, 5)
    assert fuses(z, "triton")
    assert not fuses(z, "chunked") and not fuses(z, "formula")  # no Triton LRN
    assert not fuses(z.contiguous(), "triton")  # the fused backward's tile is channels-last
    monkeypatch.setattr(pool_op, "TRITON_AVAILABLE", False)
    assert not fuses(z, "triton")  # ATen's max-pool
    _, argmax = pool_kernels.max_pool_forward(z)
    grad = torch.zeros(pool_kernels.pooled_shape(z), device=DEVICE)
    with pytest.raises(ValueError, match="needs channels-last maps"):
        relu_lrn_pool_backward(grad, z.contiguous(), argmax, 2, 0.1, 0.75, 2.0)
    with pytest.raises(ValueError, match="pooled shape"):
        relu_lrn_pool_backward(grad, z, argmax.long(), 2, 0.1, 0.75, 2.0)


@pytest.mark.cuda  # the kernel at AlexNet's sizes
@pytest.mark.parametrize("towers,channels,size", [(2, 48, 55), (2, 128, 27)], ids=["conv1", "conv2"])
def test_alexnets_blocks_in_bf16_match_the_two_kernels_on_cuda(towers, channels, size):
    """Batch 64 of conv1's and conv2's maps: the compiled kernels may contract multiply-adds differently from
    the two kernels, so the comparison allows rounding: dz to 1e-2 of its size, the bias gradient likewise."""
    z = maps(towers, channels, torch.bfloat16, size, size, n=64)
    bias = torch.randn(towers * channels, device=DEVICE).bfloat16()
    grad = torch.randn(pool_kernels.pooled_shape(z), device=DEVICE).bfloat16()
    _, argmax, dz, dbias = apart(z, bias, towers, grad)
    fused_dz, fused_dbias = relu_lrn_pool_backward(grad, z, argmax, towers, STRONG[0] / LRN_SIZE, *STRONG[1:],
                                                   bias=bias)
    assert relative_error(fused_dz, dz) < 1e-2 and relative_error(fused_dbias, dbias) < 1e-2
