"""The max-pool custom op (ops/pool.py, Triton kernels in ops/kernels/pool.py) against F.max_pool2d, forward and
backward, in both memory layouts, and as a whole op to the compiler.

Without a GPU, conftest.py sets TRITON_INTERPRET=1 and the Triton kernels run on small CPU tensors; with one,
on the GPU, and the CUDA-only tests below check AlexNet's real pools against ATen's CUDA kernels. A mismatch
means a wrong window (floor mode, overlap), a tie or NaN resolved unlike ATen (first maximum; NaN wins), a
gradient lost or doubled where windows overlap, or a layout walked wrongly.
"""
import importlib.util

import pytest
import torch
import torch.nn.functional as F

from alexnet2gpu.ops import pool as pool_op
from alexnet2gpu.ops.pool import max_pool, overlapping_max_pool

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
LAYOUTS = [torch.contiguous_format, torch.channels_last]
DTYPES = [torch.float64, torch.float32, torch.bfloat16]
# conv5's 13 -> 6, a 55 -> 27 map scaled down (odd, every column used), an even width (last column in no window)
SHAPES = [(2, 6, 13, 13), (1, 5, 11, 10)]


def maps(shape, dtype, layout, device=DEVICE) -> torch.Tensor:
    """Post-ReLU integer maps: a third are zeros, and windows tie often (the first maximum must win)."""
    x = torch.randint(-3, 5, shape, device=device).clamp(min=0).to(dtype)
    return x.contiguous(memory_format=layout)


def flat_index(argmax: torch.Tensor, width: int) -> torch.Tensor:
    """ATen's int64 index (row * W + column of the input) of each window position dy*3 + dx."""
    oh = torch.arange(argmax.shape[2], device=argmax.device).view(-1, 1)
    ow = torch.arange(argmax.shape[3], device=argmax.device).view(1, -1)
    a = argmax.long()
    return (2 * oh + a // 3) * width + 2 * ow + a % 3


def check_against_aten(x: torch.Tensor, g: torch.Tensor, exact: bool = True):
    """y, the argmax and dL/dx equal F.max_pool2d's (dL/dx within 1e-12 relative where sums may round)."""
    y, argmax = max_pool(x)
    want, indices = F.max_pool2d(x, 3, 2, return_indices=True)
    assert argmax.dtype == torch.int8 and y.dtype == x.dtype and y.shape == want.shape
    assert torch.equal(y, want) or torch.allclose(y, want, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(flat_index(argmax, x.shape[3]), indices)
    layout = torch.channels_last if not x.is_contiguous() else torch.contiguous_format
    assert y.is_contiguous(memory_format=layout)
    xg = x.detach().clone().requires_grad_()
    (got,) = torch.autograd.grad(max_pool(xg)[0], xg, g)
    (reference,) = torch.autograd.grad(F.max_pool2d(xg, 3, 2), xg, g)
    assert got.is_contiguous(memory_format=layout) and got.dtype == x.dtype
    if exact:
        assert torch.equal(got, reference)
    else:
        assert (got - reference).abs().max() <= 1e-12 * reference.abs().max()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_matches_max_pool2d_with_ties_and_integer_gradients(layout, dtype):
    """Integer maps and gradients: every value and sum is exact, so equality is the test."""
    for shape in SHAPES:
        x = maps(shape, dtype, layout)
        y_shape = (shape[0], shape[1], (shape[2] - 3) // 2 + 1, (shape[3] - 3) // 2 + 1)
        check_against_aten(x, torch.randint(-8, 9, y_shape, device=DEVICE).to(dtype))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_matches_max_pool2d_with_random_float64_gradients(layout):
    """Also with the gradient in any layout: contiguous here, and expanded (all strides 0) from a sum."""
    x = torch.randn(2, 4, 9, 11, dtype=torch.float64, device=DEVICE).contiguous(memory_format=layout)
    check_against_aten(x, torch.randn(2, 4, 4, 5, dtype=torch.float64, device=DEVICE), exact=False)
    x.requires_grad_()
    (got,) = torch.autograd.grad(max_pool(x)[0].sum(), x)
    assert torch.equal(got, torch.autograd.grad(F.max_pool2d(x, 3, 2).sum(), x)[0])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_nan_propagates_as_through_max_pool2d(layout):
    """A NaN wins its windows (the last NaN of a window, as ATen's `val > max || isnan(val)`), so a NaN map
    reaches the loss check; its gradient goes where ATen's goes."""
    x = maps((1, 3, 7, 7), torch.float32, layout)
    x[0, 0, 2, 2] = x[0, 0, 3, 4] = x[0, 1, 6, 6] = x[0, 2, 0, 0] = float("nan")
    check_against_aten(x, torch.randint(-8, 9, (1, 3, 3, 3), device=DEVICE).float())
    # (2,2) is in four windows, (3,4) in two (one shared: there the later NaN wins), (6,6) and (0,0) in one each
    assert max_pool(x)[0].isnan().sum() == 5 + 1 + 1


def test_without_triton_the_op_is_atens_own(monkeypatch):
    monkeypatch.setattr(pool_op, "TRITON_AVAILABLE", False)
    x = maps((1, 2, 7, 7), torch.float32, torch.channels_last)
    y, indices = max_pool(x)
    want, want_indices = F.max_pool2d(x, 3, 2, return_indices=True)
    assert indices.dtype == torch.int64 and torch.equal(indices, want_indices) and torch.equal(y, want)


@pytest.mark.parametrize("triton", [True, False])
def test_the_op_passes_torch_library_checks_and_compiles_whole(monkeypatch, triton):
    """With its Triton kernels (int8 argmax) and with ATen's (int64 indices), where Triton is missing."""
    monkeypatch.setattr(pool_op, "TRITON_AVAILABLE", triton and pool_op.TRITON_AVAILABLE)
    x = torch.randn(2, 4, 7, 7, device=DEVICE).contiguous(memory_format=torch.channels_last).requires_grad_()
    assert max_pool(x)[1].dtype == (torch.int8 if pool_op.TRITON_AVAILABLE else torch.int64)
    torch.library.opcheck(max_pool, (x,))
    fn = torch.compile(lambda t: max_pool(t)[0] * 2.0, fullgraph=True, backend="aot_eager")
    g = torch.randn(2, 4, 3, 3, device=DEVICE)
    (got,) = torch.autograd.grad(fn(x), x, g)
    (want,) = torch.autograd.grad(F.max_pool2d(x, 3, 2) * 2.0, x, g)
    assert torch.equal(got, want)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_the_eager_path_is_the_op_without_its_dispatch(layout):
    """Eager CUDA calls take the kernels through a plain autograd.Function (interpreted here): same maps and
    gradients as the op and as F.max_pool2d, ties included."""
    x = torch.randint(-3, 4, (2, 5, 9, 11), device=DEVICE).double().relu().contiguous(memory_format=layout)
    x.requires_grad_()
    g = torch.randint(-4, 5, (2, 5, 4, 5), device=DEVICE).double()
    y = pool_op._EagerTritonMaxPool.apply(x)
    assert torch.equal(y, max_pool(x)[0]) and torch.equal(y, F.max_pool2d(x, 3, 2))
    (got,) = torch.autograd.grad(y, x, g)
    (want,) = torch.autograd.grad(F.max_pool2d(x, 3, 2), x, g)
    assert torch.equal(got, want)


def test_the_cpu_keeps_max_pool2d(monkeypatch):
    """On the CPU overlapping_max_pool is F.max_pool2d itself (the op is for CUDA)."""
    def refuse(*args, **kwargs):
        raise AssertionError("the custom op was called on the CPU")

    monkeypatch.setattr(pool_op, "max_pool", refuse)
    monkeypatch.setattr(pool_op._EagerTritonMaxPool, "apply", refuse)
    x = torch.randn(1, 2, 7, 7)
    assert torch.equal(overlapping_max_pool(x), F.max_pool2d(x, 3, 2))


def test_the_dispatch_resolves_without_an_import_lookup(monkeypatch):
    """torch.compile cannot trace importlib's find_spec: a lookup per call would split compiled graphs at
    each pool. The choice uses what was looked up at import."""
    def refuse(*args, **kwargs):
        raise AssertionError("importlib.util.find_spec called while choosing the max-pool")

    monkeypatch.setattr(importlib.util, "find_spec", refuse)
    x = torch.zeros(1, 1, 3, 3, device=DEVICE)
    assert pool_op.uses_triton(x) == pool_op.TRITON_AVAILABLE
    assert not pool_op.uses_triton(torch.zeros(1, 1, 2, 9, device=DEVICE))  # too small: ATen says why


@pytest.mark.cuda
@pytest.mark.parametrize("shape", [(256, 96, 55, 55), (256, 256, 27, 27), (256, 256, 13, 13)],
                         ids=["pool1", "pool2", "pool5"])
def test_alexnets_pools_in_bf16_channels_last_match_aten_on_cuda(shape):
    x = torch.randn(shape, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    x = torch.relu(x).round()  # heavy ties
    oh = (shape[2] - 3) // 2 + 1
    check_against_aten(x, torch.randint(-8, 9, (shape[0], shape[1], oh, oh), device="cuda").bfloat16())
    g = torch.randn(shape[0], shape[1], oh, oh, device="cuda", dtype=torch.bfloat16)
    xg = x.clone().requires_grad_()
    (got,) = torch.autograd.grad(max_pool(xg)[0], xg, g)
    (want,) = torch.autograd.grad(F.max_pool2d(xg, 3, 2), xg, g)
    torch.testing.assert_close(got, want, rtol=1e-2, atol=1e-2)  # at most 4 terms summed in fp32, then bf16


@pytest.mark.cuda
def test_contiguous_float32_and_nan_on_cuda_at_a_real_size():
    x = torch.randn(64, 256, 27, 27, device="cuda")
    x[3, 7, 10, 10] = float("nan")
    check_against_aten(x, torch.randint(-8, 9, (64, 256, 13, 13), device="cuda").float())


@pytest.mark.cuda
def test_eager_cuda_uses_the_triton_op():
    x = torch.randn(4, 96, 55, 55, device="cuda").contiguous(memory_format=torch.channels_last)
    assert torch.equal(overlapping_max_pool(x), F.max_pool2d(x, 3, 2))
    assert pool_op.uses_triton(x)


@pytest.mark.cuda
def test_the_pool_replays_in_a_cuda_graph():
    x = torch.randn(8, 96, 55, 55, device="cuda").contiguous(memory_format=torch.channels_last).requires_grad_()
    g = torch.randn(8, 96, 27, 27, device="cuda").contiguous(memory_format=torch.channels_last)

    def step():
        y = max_pool(x)[0]
        return y, torch.autograd.grad(y, x, g)[0]

    step()  # compile the kernels before capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y, dx = step()
    with torch.no_grad():
        x.copy_(torch.randn_like(x))
    graph.replay()
    want_y, want_dx = step()
    assert torch.equal(y, want_y) and torch.equal(dx, want_dx)


@pytest.mark.cuda
def test_compiled_with_inductor_on_cuda():
    x = torch.randn(8, 256, 13, 13, device="cuda").contiguous(memory_format=torch.channels_last).requires_grad_()
    fn = torch.compile(lambda t: overlapping_max_pool(torch.relu(t)) * 2.0, fullgraph=True)
    g = torch.randn(8, 256, 6, 6, device="cuda")
    (got,) = torch.autograd.grad(fn(x), x, g)
    (want,) = torch.autograd.grad(F.max_pool2d(torch.relu(x), 3, 2) * 2.0, x, g)
    assert torch.equal(got, want)
