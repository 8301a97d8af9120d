"""The merged network against the paper's table (docs/paper.md §1-3): counts, shapes, init, clear errors."""
import math

import numpy as np
import pytest
import torch

from alexnet2gpu import AlexNet, canonical_shapes, init_weights
from alexnet2gpu.model.info import exchange_bytes_per_image, format_summary, layer_rows, main
from alexnet2gpu.model.layers import multiply_adds
from alexnet2gpu.model.layouts.two_device import TwoTowerAlexNet

PAPER_PARAMS = {"conv1": 34_944, "conv2": 307_456, "conv3": 885_120, "conv4": 663_936, "conv5": 442_624,
                "fc6": 37_752_832, "fc7": 16_781_312, "fc8": 4_097_000}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return AlexNet(dropout=0.0).eval()


def test_parameter_count_matches_paper_table(model):
    assert sum(p.numel() for p in model.parameters()) == 60_965_224
    shapes = canonical_shapes()
    for layer, count in PAPER_PARAMS.items():
        assert math.prod(shapes[f"{layer}.weight"]) + math.prod(shapes[f"{layer}.bias"]) == count


def test_canonical_names_and_caffe_shapes(model):
    sd = model.state_dict()
    assert list(sd) == [f"{l}.{k}" for l in PAPER_PARAMS for k in ("weight", "bias")]
    assert sd["conv2.weight"].shape == (256, 48, 5, 5)
    assert sd["conv3.weight"].shape == (384, 256, 3, 3)
    assert sd["fc6.weight"].shape == (4096, 9216)
    assert sd["fc8.weight"].shape == (1000, 4096)


@pytest.mark.parametrize("size", [224, 227])
def test_shapes_after_every_stage(model, size):
    """55x55 after conv1 at both input sizes (the original code's rounding for 224, docs/paper.md §3)."""
    x = torch.randn(2, 3, size, size)
    s = model.stack
    pad = 3 if size == 224 else 0
    h = s.conv1(torch.nn.functional.pad(x, (0, pad, 0, pad)))
    assert h.shape == (2, 96, 55, 55)
    h = s.features(x, pad)
    assert h.shape == (2, 256, 13, 13)
    h = s.conv_cross(h)
    assert h.shape == (2, 256, 6, 6)
    h = s.fully_connected(h, "fc6")
    assert h.shape == (2, 4096)
    assert s.fully_connected(h, "fc7").shape == (2, 4096)
    assert model(x).shape == (2, 1000)


def test_pad_224_equals_227_with_zero_border(model):
    """A 224 image padded right/bottom by 3 zeros is exactly a 227 input."""
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model(x), model(torch.nn.functional.pad(x, (0, 3, 0, 3))))


def test_multiply_adds_match_paper():
    macs = multiply_adds()
    assert round(sum(macs.values()) / 1e6, 1) == 724.4
    assert round(macs["conv2"] / 1e6, 1) == 223.9 and round(macs["fc6"] / 1e6, 1) == 37.7


def test_other_classes_and_channels():
    m = AlexNet(num_classes=10, in_channels=1)
    assert m(torch.randn(2, 1, 224, 224)).shape == (2, 10)
    assert m.state_dict()["conv1.weight"].shape == (96, 1, 11, 11)


@pytest.mark.parametrize("init,bias,fc_std", [("paper", 1.0, 0.01), ("caffe", 0.1, 0.005)])
def test_init_statistics(init, bias, fc_std):
    w = init_weights(init=init)
    for layer in ("conv1", "conv3", "fc8"):
        assert torch.all(w[f"{layer}.bias"] == 0)
    for layer in ("conv2", "conv4", "conv5", "fc6", "fc7"):
        assert torch.all(w[f"{layer}.bias"] == bias)
    assert w["conv1.weight"].mean().abs() < 1e-3
    assert w["conv2.weight"].std().item() == pytest.approx(0.01, rel=0.02)
    assert w["fc8.weight"].std().item() == pytest.approx(0.01, rel=0.01)
    assert w["fc6.weight"].std().item() == pytest.approx(fc_std, rel=0.01)


def test_same_seed_same_weights():
    torch.manual_seed(3)
    a = AlexNet().state_dict()
    torch.manual_seed(3)
    b = AlexNet().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("shape", [(2, 3, 100, 100), (2, 3, 224, 227), (2, 1, 224, 224), (3, 224, 224)])
def test_wrong_input_is_a_clear_error(model, shape):
    with pytest.raises(ValueError, match=r"expects input N x 3 x 224 x 224 .* got " + " x ".join(map(str, shape))):
        model(torch.zeros(shape))


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_classes=0), "num_classes must be a whole number of at least 1"),
    (dict(in_channels=-1), "in_channels must be a whole number of at least 1, got -1: pass e.g. in_channels=3"),
    (dict(dropout=float("nan")), "dropout is a probability from 0 to 1, got nan"),
    (dict(dropout=1.5), "dropout is a probability from 0 to 1, got 1.5"),
    (dict(init="xavier"), "unknown init scheme 'xavier': choose one of paper, caffe"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AlexNet(**kwargs)


@pytest.mark.parametrize("make_input, match", [
    (lambda: torch.zeros(1, 3, 224, 224, dtype=torch.uint8), "weights are torch.float32 and the input is torch.uint8: "
     "pass x.to\\(torch.float32\\) after subtracting the mean"),
    (lambda: torch.zeros(1, 3, 224, 224, dtype=torch.float64), "the input is torch.float64: pass x.to\\(torch.float32\\)\\.$"),
    (lambda: torch.zeros(1, 3, 224, 224, dtype=torch.bfloat16), "or run under torch.autocast"),
    (lambda: np.zeros((1, 3, 224, 224), np.float32), "takes a torch.Tensor, got numpy.ndarray"),
])
@pytest.mark.parametrize("layout", ["merged", "two-device"])
def test_input_of_another_dtype_or_type_is_a_clear_error(layout, make_input, match):
    model = AlexNet(10) if layout == "merged" else TwoTowerAlexNet(10, devices=("cpu", "cpu"))
    with pytest.raises(ValueError, match=match):
        model(make_input())


def test_input_on_another_device_is_a_clear_error_and_autocast_takes_any_float(model):
    with pytest.raises(ValueError, match="the input is on meta and the model on cpu: move the input with x.to"):
        model(torch.zeros(1, 3, 224, 224, device="meta"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(torch.zeros(1, 3, 224, 224, dtype=torch.bfloat16)).shape == (1, 1000)


def test_foreign_state_dicts_are_refused(model):
    sd = model.state_dict()
    missing = {k: v for k, v in sd.items() if k != "fc8.bias"}
    with pytest.raises(ValueError, match=r"missing \['fc8.bias'\], unexpected nothing"):
        model.load_state_dict(missing)
    ddp = {"module." + k: v for k, v in sd.items()}
    with pytest.raises(ValueError, match="strip the 'module.' prefix"):
        model.load_state_dict(ddp)
    torchvision_like = dict(sd, **{"conv2.weight": torch.zeros(256, 96, 5, 5)})
    with pytest.raises(ValueError, match=r"conv2.weight has shape \(256, 96, 5, 5\) but this model needs \(256, 48, 5, 5\)"):
        model.load_state_dict(torchvision_like)
    with pytest.raises(ValueError, match="fc8.weight has shape .*num_classes"):
        AlexNet(num_classes=10).load_state_dict(sd)


def test_state_dict_round_trip_gives_same_outputs(model):
    other = AlexNet(init="caffe", dropout=0.0).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert not torch.equal(other(x), model(x))
        other.load_state_dict(model.state_dict())
        assert torch.equal(other(x), model(x))


def test_info_summary_totals(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "total parameters: 60,965,224" in out and "724.4 M" in out
    rows = layer_rows("two-device")
    assert [(r["layer"], r["tower"], r["device"]) for r in rows][-3:] == [
        ("fc7", "0", "cuda:0"), ("fc7", "1", "cuda:1"), ("fc8", "0", "cuda:0")]
    assert sum(r["params"] for r in layer_rows("merged", 10, 1)) == sum(
        math.prod(s) for s in canonical_shapes(10, 1).values())
    assert exchange_bytes_per_image()["conv3"] == 2 * 13 * 13 * 128 * 4
    assert "1 input channels, 10 classes" in format_summary("merged", 10, 1)
    capsys.readouterr()
    assert main(["--num-classes", "0"]) == 2
    assert capsys.readouterr().err == ("alexnet2gpu-info: error: --num-classes must be a whole number of at least 1, "
                                       "got 0: pass e.g. --num-classes 1000.\n")
