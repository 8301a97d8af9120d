"""How TowerStack computes (its StackOptions, the memory layout, in-place ReLU) changes nothing computed.

The reference is the network written out with plain torch.nn.functional calls on the canonical weights
(grouped conv2/4/5, LRN by F.local_response_norm on each tower's half, paper §3.3-3.4): the formulation the
package started from. A mismatch in the logits or any gradient means an option altered the network.
"""
import pytest
import torch
import torch.nn.functional as F

from alexnet2gpu.model.layers import LRN_ALPHA, LRN_BETA, LRN_K, LRN_SIZE, canonical_shapes
from alexnet2gpu.model.layouts.merged import AlexNet
from alexnet2gpu.model.stack import StackOptions, conv1_input


def reference_logits(w: dict, x: torch.Tensor) -> torch.Tensor:
    def lrn(h):
        return torch.cat([F.local_response_norm(t, LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K) for t in h.chunk(2, 1)], 1)

    h = F.pad(x, (0, 3, 0, 3))
    h = F.max_pool2d(lrn(F.relu(F.conv2d(h, w["conv1.weight"], w["conv1.bias"], stride=4))), 3, 2)
    h = F.max_pool2d(lrn(F.relu(F.conv2d(h, w["conv2.weight"], w["conv2.bias"], padding=2, groups=2))), 3, 2)
    h = F.relu(F.conv2d(h, w["conv3.weight"], w["conv3.bias"], padding=1))
    h = F.relu(F.conv2d(h, w["conv4.weight"], w["conv4.bias"], padding=1, groups=2))
    h = F.max_pool2d(F.relu(F.conv2d(h, w["conv5.weight"], w["conv5.bias"], padding=1, groups=2)), 3, 2)
    h = F.relu(F.linear(h.flatten(1), w["fc6.weight"], w["fc6.bias"]))
    h = F.relu(F.linear(h, w["fc7.weight"], w["fc7.bias"]))
    return F.linear(h, w["fc8.weight"], w["fc8.bias"])


def lrn_bias_inputs(output: torch.Tensor) -> list[tuple[str, bool]]:
    """For each fused ReLU + LRN (and max-pool) in the autograd graph of `output`: its node's name and whether it
    was given a bias (its second input)."""
    found, seen, todo = [], set(), [output.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node.name().startswith("_EagerReluLRN"):
            found.append((node.name(), node.next_functions[1][0] is not None))
        todo += [fn for fn, _ in node.next_functions]
    return found


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    state = AlexNet(num_classes=10).state_dict()
    x = torch.randn(1, 3, 224, 224, dtype=torch.float64) * 60
    weights = {k: v.double().requires_grad_() for k, v in state.items()}
    ref = reference_logits(weights, x)
    grads = torch.autograd.grad(ref.square().sum(), list(weights.values()))
    return state, x, ref.detach(), dict(zip(weights, grads))


CL, CONTIGUOUS = torch.channels_last, torch.contiguous_format


@pytest.mark.parametrize("lrn,convs,layout", [("auto", "grouped", CL), ("auto", "grouped", CONTIGUOUS),
                                              ("auto", "towers", CL), ("formula", "grouped", CL),
                                              ("triton", "grouped", CL), ("triton", "grouped", CONTIGUOUS),
                                              ("triton", "towers", CL)])
def test_logits_and_gradients_unchanged(setup, lrn, convs, layout, monkeypatch):
    """"triton": the CUDA path's fused ReLU + LRN kernels (interpreted on a CPU, in a few large tiles), which add
    conv1's and conv2's biases themselves and sum their gradients; on channels-last maps with the max-pool after
    them as one step and one backward kernel, on contiguous ones apart (then F.max_pool2d on the CPU)."""
    if lrn == "triton" and torch.cuda.is_available():  # no interpreter where there is a GPU (conftest.py)
        pytest.skip("the kernels on CPU tensors need the interpreter; tests/model/test_cuda.py checks them compiled")
    from alexnet2gpu.ops.kernels import lrn as lrn_kernels, lrn_pool as lrn_pool_kernels, pool as pool_kernels
    for module, tile in ((lrn_kernels, "WINDOW_TILE"), (lrn_pool_kernels, "TILE"), (pool_kernels, "FORWARD_TILE")):
        monkeypatch.setattr(module, tile, 1 << 16)
    state, x, ref, ref_grads = setup
    model = AlexNet(num_classes=10, dropout=0.0, options=StackOptions(convs=convs, lrn=lrn)).double()
    model.load_state_dict(state)
    model.stack.to(memory_format=layout)
    logits = model(x)
    if lrn == "triton":  # each fused ReLU + LRN takes its convolution's bias: conv1's, conv2's (one a tower)
        blocks = 3 if convs == "towers" else 2
        fused = "MaxPool" if layout == CL else ""
        assert lrn_bias_inputs(logits) == [("_EagerReluLRN" + fused + "Backward", True)] * blocks
    logits.square().sum().backward()
    torch.testing.assert_close(logits, ref, rtol=1e-10, atol=1e-10)
    grads = model.to_canonical({n: p.grad for n, p in model.named_parameters()})
    assert grads.keys() == ref_grads.keys()
    for name, g in grads.items():
        torch.testing.assert_close(g, ref_grads[name], rtol=1e-9, atol=1e-12, msg=f"gradient of {name} differs")


def test_options_keep_canonical_parameters_and_are_fixed():
    model = AlexNet(num_classes=10, options=StackOptions(convs="towers", lrn="formula"))
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == canonical_shapes(10)
    assert "options=StackOptions(conv1='auto', convs='towers', lrn='formula')" in repr(model)
    with pytest.raises(AttributeError):
        model.stack.options.convs = "grouped"  # frozen: a model's forms are chosen when it is built


@pytest.mark.parametrize("field,value,choices", [("convs", "fft", "grouped, towers"),
                                                 ("lrn", "native", "auto, chunked, triton, formula")])
def test_an_unknown_form_is_a_clear_error(field, value, choices):
    with pytest.raises(ValueError, match=f"unknown {field} form '{value}': choose one of {choices}."):
        StackOptions(**{field: value})


def test_channels_last_by_default_and_canonical_state_dict_contiguous():
    model = AlexNet(num_classes=10)
    assert model.stack.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    assert not model.stack.conv2.weight.is_contiguous()
    state = model.state_dict()
    assert all(v.is_contiguous() for v in state.values())
    assert {k: tuple(v.shape) for k, v in state.items()} == canonical_shapes(10)


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
def test_conv1_input_pads_right_and_bottom_in_the_weights_layout(layout):
    weight = torch.randn(96, 3, 11, 11).contiguous(memory_format=layout)
    x = torch.randn(2, 3, 224, 224)
    padded = conv1_input(x, 3, weight)
    assert torch.equal(padded, F.pad(x, (0, 3, 0, 3)))  # zeros right and bottom only (docs/paper.md §3)
    assert padded.is_contiguous(memory_format=layout)
    assert conv1_input(padded, 0, weight).is_contiguous(memory_format=layout)
