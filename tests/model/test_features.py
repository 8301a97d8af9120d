"""What a torchvision or timm user reaches for: torchvision's feature extraction (torch.fx symbolic tracing),
`forward_features` (fc7's output, what fc8 reads), and a printed model that says its state dict's names."""
import pytest
import torch
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from alexnet2gpu import AlexNet, TwoTowerAlexNet, canonical_shapes
from tests.helpers.parity import assert_near
from tests.helpers.worlds import run_world, values

LAYERS = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"]


@pytest.fixture(scope="module")
def merged():
    torch.manual_seed(0)
    return AlexNet(num_classes=10).eval()


def images(size: int = 224, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(size)) * 50


def hooked_fc7(model: torch.nn.Module, module: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(fc7's output as a forward hook sees it, the logits) of one eager forward."""
    seen = {}
    handle = module.register_forward_hook(lambda mod, args, out: seen.setdefault("fc7", out))
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        handle.remove()
    return seen["fc7"], logits


@pytest.mark.parametrize("size", [224, 227])
def test_feature_extraction_gives_the_hooked_fc7_and_the_logits(merged, size):
    extractor = create_feature_extractor(merged, {"stack.fc7": "feat", "fc8": "logits"})
    x = images(size)
    with torch.no_grad():
        got = extractor(x)
    fc7, logits = hooked_fc7(merged, merged.stack.fc7, x)
    # the graph holds each layer's portable form (torch's LRN, F.max_pool2d): the same function to rounding
    assert_near(got["feat"], fc7, "fc7 through the graph")
    assert_near(got["logits"], logits, "logits through the graph")


def test_graph_node_names_list_the_layers(merged):
    train_nodes, eval_nodes = get_graph_node_names(merged)
    for nodes in (train_nodes, eval_nodes):
        assert [n for n in nodes if n.startswith("stack.conv") or n.startswith("stack.fc") or n == "fc8"] == \
            [f"stack.{name}" for name in LAYERS] + ["fc8"]
    assert "stack.dropout" in train_nodes


def test_the_traced_model_still_checks_its_input_in_one_sentence(merged):
    extractor = create_feature_extractor(merged, {"stack.fc7": "feat"})
    with pytest.raises(ValueError, match=r"expects input N x 3 x 224 x 224 .* got 2 x 3 x 200 x 200: crop or resize"):
        extractor(images(200))
    with pytest.raises(ValueError, match=r"weights are torch.float32 and the input is torch.uint8"):
        extractor(torch.zeros(1, 3, 224, 224, dtype=torch.uint8))


def test_the_two_device_layout_traces_too():
    torch.manual_seed(0)
    model = TwoTowerAlexNet(num_classes=10, devices=("cpu", "cpu")).eval()
    extractor = create_feature_extractor(model, {"towers.1.fc7": "feat", "fc8": "logits"})
    x = images()
    with torch.no_grad():
        got = extractor(x)
    fc7, logits = hooked_fc7(model, model.towers[1].fc7, x)
    assert_near(got["feat"], fc7, "tower 1's fc7 through the graph")
    assert_near(got["logits"], logits, "logits through the graph")
    assert [name for name, _ in model.exchanges] == ["conv3", "conv3", "fc6", "fc6", "fc7", "fc7", "fc8"]


@pytest.mark.parametrize("layout", ["merged", "two-device"])
def test_fc8_of_forward_features_is_forward(merged, layout):
    model = merged if layout == "merged" else TwoTowerAlexNet(num_classes=10, devices=("cpu", "cpu")).eval()
    if layout != "merged":
        model.load_state_dict(merged.state_dict())
    x = images()
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (2, 4096)
        assert torch.equal(model.fc8(features), model(x))
        assert (features >= 0).all()  # after fc7's ReLU
    if layout == "merged":
        fc7, _ = hooked_fc7(model, model.stack.fc7, x)
        assert torch.equal(features, torch.relu(fc7))


def features_on_ranks(rank: int, state: dict, x: torch.Tensor) -> torch.Tensor:
    from alexnet2gpu.distributed import world
    from alexnet2gpu.model.layouts.tower_parallel import TowerParallelAlexNet
    ctx = world.setup("cpu", timeout_s=60)
    model = TowerParallelAlexNet(num_classes=10, ctx=ctx).eval()
    model.load_state_dict(state)
    with torch.no_grad():
        features = model.forward_features(x)
        exchanges = [name for name, _ in model.exchanges]
        logits = model(x)
    world.teardown()
    return features, logits, exchanges


def test_tower_parallel_forward_features_are_the_merged_ones_on_every_rank(merged):
    x = images()
    with torch.no_grad():
        want, logits = merged.forward_features(x), merged(x)
    for features, got_logits, exchanges in values(run_world(features_on_ranks, 2, merged.state_dict(), x)):
        assert_near(features, want, "features")
        assert_near(got_logits, logits, "logits")
        assert exchanges == ["conv3", "fc6", "fc7", "features"]


@pytest.mark.parametrize("make", [lambda: AlexNet(num_classes=10),
                                  lambda: TwoTowerAlexNet(num_classes=10, devices=("cpu", "cpu"))])
def test_print_says_the_state_dict_keys_are_canonical(make):
    model = make()
    text = repr(model)
    assert "state_dict() keys are canonical, conv1.weight ... fc8.bias (alexnet2gpu.canonical_shapes)" in text
    assert "(conv1): Conv2d" in text  # the module names stay the layout's own
    keys = list(model.state_dict())
    assert keys == list(canonical_shapes(10)) and keys[0] == "conv1.weight" and keys[-1] == "fc8.bias"
