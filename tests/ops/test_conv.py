"""conv1's batch-sliced weight gradient (conv.py) is the ordinary convolution's, input gradient included."""
import pytest
import torch
from torch import nn

from alexnet2gpu.ops import conv


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


# conv1 as a 3x3 convolution over 4x4 pixel blocks: each crop size (224 is padded by 3 on the right and bottom,
# 227 by none: docs/paper.md §3) and each memory layout, against the one convolution, in float64.
@pytest.mark.parametrize("size, pad, layout", [(224, 3, torch.channels_last), (227, 0, torch.contiguous_format)])
def test_space_to_depth_conv1_is_the_direct_one(size, pad, layout):
    torch.manual_seed(0)
    layer = nn.Conv2d(3, 96, 11, stride=4).double().to(memory_format=layout)
    x = (torch.randn(2, 3, size, size, dtype=torch.float64) * 60).contiguous(memory_format=layout).requires_grad_()
    want = layer(torch.nn.functional.pad(x, (0, pad, 0, pad)))
    got = conv.conv1_space_to_depth(x, pad, layer)
    assert got.shape == want.shape == (2, 96, 55, 55) and got.is_contiguous(memory_format=layout)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-9)
    g = torch.randn_like(want)
    params = [x] + list(layer.parameters())
    for a, b, name in zip(torch.autograd.grad(got, params, g), torch.autograd.grad(want, params, g),
                          ("input", "weight", "bias")):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-9, msg=name)


@pytest.mark.parametrize("form", ["space-to-depth", "direct"])
def test_conv1_without_its_bias_for_the_fused_lrn(form):
    """with_bias=False (the CUDA path, where the ReLU + LRN kernels add the bias): the convolution minus its bias."""
    torch.manual_seed(0)
    layer = nn.Conv2d(3, 96, 11, stride=4).double().to(memory_format=torch.channels_last)
    layer.bias.data.uniform_(1.0, 2.0)
    x = (torch.randn(2, 3, 224, 224, dtype=torch.float64) * 60).contiguous(memory_format=torch.channels_last)
    padded = torch.nn.functional.pad(x, (0, 3, 0, 3))
    got = (conv.conv1_space_to_depth(x, 3, layer, with_bias=False) if form == "space-to-depth"
           else conv.conv2d_chunked_weight_grad(padded, layer, with_bias=False))
    torch.testing.assert_close(got + layer.bias.view(1, -1, 1, 1), layer(padded), rtol=1e-12, atol=1e-9)


def test_space_to_depth_blocks_take_autocasts_dtype_in_their_one_pass():
    layer = nn.Conv2d(3, 96, 11, stride=4)
    x = torch.randn(2, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = conv.conv1_space_to_depth(x, 3, layer)
        want = layer(torch.nn.functional.pad(x, (0, 3, 0, 3)))
    assert got.dtype == want.dtype == torch.bfloat16
    assert ((got.float() - want.float()).norm() / want.float().norm()).item() < 1e-2


def test_the_network_with_space_to_depth_conv1_has_the_direct_ones_logits_and_gradients():
    from alexnet2gpu import AlexNet
    from alexnet2gpu.model.stack import StackOptions
    from tests.helpers.parity import assert_near
    torch.manual_seed(0)
    weights = AlexNet(num_classes=10).state_dict()
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64) * 60
    results = {}
    for impl in ("direct", "space-to-depth"):
        model = AlexNet(num_classes=10, dropout=0.0, options=StackOptions(conv1=impl)).double()
        model.load_state_dict(weights)
        logits = model(x)
        logits.square().sum().backward()
        results[impl] = logits.detach(), {n: p.grad for n, p in model.named_parameters()}
    (want_logits, want), (got_logits, got) = results["direct"], results["space-to-depth"]
    assert_near(got_logits, want_logits, "logits")
    for name, grad in want.items():
        assert_near(got[name], grad, f"gradient of {name}")
    with pytest.raises(ValueError, match="unknown conv1 form 'blocks': choose one of auto, direct, space-to-depth"):
        StackOptions(conv1="blocks")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_auto_conv1_is_space_to_depth_on_cuda_and_direct_elsewhere(monkeypatch, device):
    from alexnet2gpu import AlexNet
    from alexnet2gpu.model import stack as model_module
    calls = []
    for name in ("conv1_space_to_depth", "conv2d_chunked_weight_grad"):
        real = getattr(model_module, name)
        monkeypatch.setattr(model_module, name,
                            lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    net = AlexNet(num_classes=10).to(device)
    assert net.stack.options.conv1 == "auto"
    net(torch.randn(2, 3, 224, 224, device=device))
    assert calls == ["conv1_space_to_depth" if device == "cuda" else "conv2d_chunked_weight_grad"]
