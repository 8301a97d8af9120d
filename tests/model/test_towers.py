"""The two-device layout against the merged oracle: same weights => same logits, loss, gradients, steps.

A mismatch in conv3/fc6/fc7 means the gather order or the canonical row split is wrong (tower t owns rows
[t*half, (t+1)*half)); a mismatch that grows over steps means a gradient is missing or doubled.
"""
import pytest
import torch
import torch.nn.functional as F

from alexnet2gpu import AlexNet, TwoTowerAlexNet, merge_towers, split_towers
from alexnet2gpu.model.layouts import build_model
from tests.helpers.parity import assert_near


def canonical_grads(model):
    return model.to_canonical({n: p.grad.detach().cpu() for n, p in model.named_parameters()})


def pair(init="paper"):
    merged = AlexNet(num_classes=20, init=init, dropout=0.0)
    towers = TwoTowerAlexNet(num_classes=20, dropout=0.0, devices=("cpu", "cpu"))
    towers.load_state_dict(merged.state_dict())
    return merged, towers


def assert_equal_dicts(a, b):
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=lambda m: f"{k}: {m}", rtol=0, atol=0)


def test_split_merge_round_trip():
    w = AlexNet().state_dict()
    parts = split_towers(w)
    assert parts[0]["conv2.weight"].shape == (128, 48, 5, 5) and "fc8.weight" not in parts[1]
    assert torch.equal(parts[1]["conv3.weight"], w["conv3.weight"][192:])
    assert_equal_dicts(merge_towers(parts), w)


def test_logits_loss_and_gradients_match_merged():
    merged, towers = pair(init="caffe")  # non-zero fc8 gradients need non-dead ReLUs: caffe's biases
    x, y = torch.randn(4, 3, 224, 224) * 60, torch.randint(0, 20, (4,))
    logits_m, logits_t = merged(x), towers(x)
    assert_near(logits_t, logits_m, "logits")
    loss_m, loss_t = F.cross_entropy(logits_m, y), F.cross_entropy(logits_t, y)
    assert_near(loss_t, loss_m, "loss")
    loss_m.backward()
    loss_t.backward()
    gm, gt = canonical_grads(merged), canonical_grads(towers)
    assert all(g.abs().sum() > 0 for g in gm.values())  # every layer really got a gradient
    for k in gm:
        assert_near(gt[k], gm[k], k)


def test_three_sgd_steps_keep_weights_equal():
    # float64: in float32 the two layouts' rounding (grouped vs per-tower conv1 backward) flips a near-tie
    # in some max-pooling window in about one run in three, which moves that window's gradient elsewhere and
    # makes the next step differ by ~1e-2 however correct both layouts are (measured with either LRN).
    merged, towers = (m.double() for m in pair(init="caffe"))
    opts = [torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4) for m in (merged, towers)]
    for step in range(3):
        x, y = torch.randn(4, 3, 227, 227, dtype=torch.float64) * 60, torch.randint(0, 20, (4,))
        for model, opt in zip((merged, towers), opts):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    got, want = towers.state_dict(), merged.state_dict()
    for k in want:
        assert_near(got[k], want[k], k)


def test_towers_exchange_only_at_conv3_fc6_fc7_fc8():
    _, towers = pair()
    with torch.no_grad():
        towers(torch.randn(2, 3, 224, 224))
    layers = [name for name, _ in towers.exchanges]
    assert layers == ["conv3", "conv3", "fc6", "fc6", "fc7", "fc7", "fc8"]
    per_image = {name: nbytes // 2 for name, nbytes in towers.exchanges}
    assert per_image == {"conv3": 13 * 13 * 128 * 4, "fc6": 6 * 6 * 128 * 4, "fc7": 2048 * 4, "fc8": 2048 * 4}


def test_tower_features_depend_only_on_own_tower():
    """Up to conv3 a tower never sees the other: changing tower 1's conv1 leaves tower 0's maps unchanged."""
    merged, towers = pair()
    x = torch.randn(1, 3, 224, 224) * 60
    with torch.no_grad():
        before = merged.stack.features(x, 3)
        merged.stack.conv1.weight[48:] += 0.05
        after = merged.stack.features(x, 3)
    assert torch.equal(before[:, :128], after[:, :128])
    assert not torch.equal(before[:, 128:], after[:, 128:])


def test_checkpoint_from_either_layout_loads_into_the_other(tmp_path):
    merged, towers = pair()
    torch.save(towers.state_dict(), tmp_path / "w.pt")
    fresh = AlexNet(num_classes=20, dropout=0.0, init="caffe")
    fresh.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), merged(x), rtol=0, atol=0)
        towers2 = TwoTowerAlexNet(num_classes=20, dropout=0.0, devices=("cpu", "cpu"))
        towers2.load_state_dict(fresh.state_dict())
        assert_near(towers2(x), merged(x), "logits")


@pytest.mark.parametrize("devices,match", [
    (("cpu",), r"devices must be two entries, one per tower"),
    ("cpu", r"devices must be two entries"),
    (("cpu", "gpu:7"), r"unknown device 'gpu:7'"),
    (("cuda:0", "cuda:9"), r"device 'cuda:\d' is not on this machine"),
])
def test_bad_devices(devices, match):
    with pytest.raises(ValueError, match=match):
        TwoTowerAlexNet(devices=devices)


def test_default_devices_need_two_gpus():
    if torch.cuda.device_count() >= 2:
        assert TwoTowerAlexNet().devices == (torch.device("cuda:0"), torch.device("cuda:1"))
    else:
        with pytest.raises(ValueError, match="needs two devices .* pass devices=\\('cpu', 'cpu'\\)"):
            TwoTowerAlexNet()


def test_build_model_by_name():
    assert isinstance(build_model("merged", num_classes=5), AlexNet)
    assert isinstance(build_model("two-device", num_classes=5, devices=("cpu", "cpu")), TwoTowerAlexNet)
    with pytest.raises(ValueError, match="unknown layout 'pipeline'"):
        build_model("pipeline")
