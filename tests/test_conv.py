"""conv1's batch-sliced weight gradient (conv.py) is the ordinary convolution's, input gradient included."""
import pytest
import torch
from torch import nn

from alexnet2gpu import conv


@pytest.mark.parametrize("bias", [True, False])
def test_same_output_and_gradients_as_the_plain_convolution(monkeypatch, bias):
    monkeypatch.setattr(conv, "CHUNK_IMAGES", 2)  # batch 5: slices of 2, 2 and 1 images
    torch.manual_seed(0)
    layer = nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=bias).double()
    x = torch.randn(5, 3, 7, 7, dtype=torch.float64).contiguous(memory_format=torch.channels_last).requires_grad_()
    g = torch.randn(5, 4, 4, 4, dtype=torch.float64)
    params = [x] + list(layer.parameters())
    want = torch.autograd.grad(layer(x), params, g)
    out = conv.conv2d_chunked_weight_grad(x, layer)
    got = torch.autograd.grad(out, params, g)
    torch.testing.assert_close(out, layer(x), rtol=0, atol=0)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda *p: conv._BatchChunkedWeightGrad.apply(
        p[0], p[1], p[2] if bias else None, layer.stride, layer.padding), tuple(params))
