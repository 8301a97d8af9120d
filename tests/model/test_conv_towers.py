"""StackOptions(convs="towers"): conv2/4/5 as one ungrouped convolution per tower, each tower's maps a dense tensor
of its own between the layers where the towers meet. Same canonical parameters, same logits and gradients as the
grouped oracle."""
import pytest
import torch
from torch.overrides import TorchFunctionMode

from alexnet2gpu import AlexNet, canonical_shapes
from alexnet2gpu.model.stack import StackOptions
from alexnet2gpu.ops import conv
from tests.helpers.parity import assert_near

LAYOUTS = [torch.channels_last, torch.contiguous_format]


@pytest.fixture(scope="module")
def weights():
    torch.manual_seed(0)
    return AlexNet(num_classes=10).state_dict()


def built(weights, layout=torch.channels_last, **options):
    model = AlexNet(num_classes=10, dropout=0.0, options=StackOptions(**options)).double()
    model.load_state_dict(weights)
    return model.to(memory_format=layout)


def logits_and_grads(model, x, forward=None):
    logits = (model if forward is None else forward)(x)
    logits.square().sum().backward()
    return logits.detach(), {name: p.grad for name, p in model.named_parameters()}


# Each layout and each input size once (227 needs no padding, 224 is padded to it: docs/paper.md §3).
@pytest.mark.parametrize("layout,size", [(torch.channels_last, 224), (torch.contiguous_format, 227)])
def test_same_logits_and_gradients_as_grouped(weights, monkeypatch, layout, size):
    monkeypatch.setattr(conv, "CHUNK_IMAGES", 1)  # conv1's weight gradient over batch slices, as on a CPU
    x = torch.randn(2, 3, size, size, dtype=torch.float64) * 60
    want_logits, want = logits_and_grads(built(weights, layout, convs="grouped"), x)
    got_logits, got = logits_and_grads(built(weights, layout, convs="towers"), x)
    assert_near(got_logits, want_logits, "logits")
    for name, grad in want.items():
        assert_near(got[name], grad, f"gradient of {name}")


class ConvInputs(TorchFunctionMode):
    """Records (input, weight) of every convolution called."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.conv2d:
            self.calls.append((args[0], args[1]))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_no_convolution_reads_a_slice(weights, layout):
    """What the form is for: no convolution reads a slice of a wider tensor (cuDNN would copy it first)."""
    model = built(weights, layout, convs="towers")
    with torch.no_grad(), ConvInputs() as seen:
        model(torch.randn(2, 3, 224, 224, dtype=torch.float64))
    # conv1 and conv3 read every map and stay one convolution; conv2/4/5 run once a tower on its own maps.
    assert [(x.shape[1], w.shape[0]) for x, w in seen.calls] == [
        (3, 96), (48, 128), (48, 128), (256, 384), (192, 192), (192, 192), (192, 128), (192, 128)]
    for x, w in seen.calls:
        assert x.is_contiguous(memory_format=layout) and w.is_contiguous(memory_format=layout)


def test_parameters_and_state_dict_unchanged(weights):
    """A choice of how, not what: the parameters stay the grouped, canonical ones through a forward and backward
    pass."""
    model = built(weights, convs="towers")
    params = [(name, p.shape, p.stride()) for name, p in built(weights).named_parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    logits_and_grads(model, torch.randn(2, 3, 224, 224, dtype=torch.float64))
    assert [(name, p.shape, p.stride()) for name, p in model.named_parameters()] == params
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == canonical_shapes(10)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_compiles_without_graph_breaks(weights):
    """torch.compile(fullgraph=True) fails on any graph break. The CPU's chunked LRN asks the thread count, which
    breaks graphs in any convolution form, so the LRN here is the plain formula."""
    torch.manual_seed(2)
    model = built(weights, convs="towers", lrn="formula").float()
    x = torch.randn(1, 3, 227, 227) * 60
    want_logits, want = logits_and_grads(model, x)
    model.zero_grad(set_to_none=True)
    got_logits, got = logits_and_grads(model, x, torch.compile(model, backend="aot_eager", fullgraph=True))
    assert_near(got_logits, want_logits, "logits")
    for name, grad in want.items():
        assert_near(got[name], grad, f"gradient of {name}")
