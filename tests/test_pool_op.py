"""The max-pool custom op (pool_op.py), which a torch.compile'd model on CUDA calls: the same numbers as
F.max_pool2d forward and backward, in the input's memory layout, and a whole op to the compiler."""
import pytest
import torch
import torch.nn.functional as F

from alexnet2gpu.pool_op import max_pool


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_matches_max_pool2d_forward_and_backward(layout):
    x = torch.randn(2, 6, 13, 13, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_()
    y, _ = max_pool(x)
    assert torch.equal(y, F.max_pool2d(x, 3, 2)) and y.shape == (2, 6, 6, 6)
    assert y.is_contiguous(memory_format=layout)
    g = torch.randn_like(y)
    (got,) = torch.autograd.grad(y, x, g)
    (want,) = torch.autograd.grad(F.max_pool2d(x, 3, 2), x, g)
    assert torch.equal(got, want)


def test_the_op_passes_torch_library_checks_and_compiles_whole():
    x = torch.randn(2, 4, 7, 7, requires_grad=True)
    torch.library.opcheck(max_pool, (x,))
    fn = torch.compile(lambda t: max_pool(t)[0] * 2.0, fullgraph=True, backend="aot_eager")
    g = torch.randn(2, 4, 3, 3)
    (got,) = torch.autograd.grad(fn(x), x, g)
    (want,) = torch.autograd.grad(F.max_pool2d(x, 3, 2) * 2.0, x, g)
    assert torch.equal(got, want)

