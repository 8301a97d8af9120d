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


def test_one_towers_rows_of_the_weight(monkeypatch):
    """The per-tower form (conv_impl="towers") passes views of the layer's weight: their gradients reach it."""
    monkeypatch.setattr(conv, "CHUNK_IMAGES", 2)
    torch.manual_seed(1)
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    weight.requires_grad_()
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)
    x = torch.randn(5, 3, 7, 7, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    g = torch.randn(5, 4, 3, 3, dtype=torch.float64)

    def forward(conv2d):
        return torch.cat([conv2d(x, w, b, (2, 2), (0, 0)) for w, b in zip(weight.chunk(2), bias.chunk(2))], 1)

    want = torch.autograd.grad(forward(torch.nn.functional.conv2d), (weight, bias), g)
    out = forward(conv.conv2d_rows_chunked_weight_grad)
    torch.testing.assert_close(out, forward(torch.nn.functional.conv2d), rtol=0, atol=0)
    for a, b in zip(torch.autograd.grad(out, (weight, bias), g), want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
