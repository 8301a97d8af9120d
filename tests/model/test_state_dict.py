"""Every layout's state dict under the wrappers people put models in: nn.Sequential, a parent module,
DistributedDataParallel, torch.compile and AveragedModel must each save `prefix + canonical name`
(conv1.weight ... fc8.bias) and load it back. The tower-parallel layout's wrappers are checked in
tests/distributed/test_tower_parallel.py, inside a world of two ranks."""
import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel

from alexnet2gpu import AlexNet, TwoTowerAlexNet, canonical_shapes

CLASSES = 5
LAYOUTS = {
    "merged": lambda: AlexNet(CLASSES),
    "two-device": lambda: TwoTowerAlexNet(CLASSES, devices=("cpu", "cpu")),
}


class Parent(nn.Module):
    """A model inside a module of one's own, beside a layer of its own."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.head = net, nn.Linear(CLASSES, 2)


@pytest.fixture(scope="module")
def one_process_group():
    """DistributedDataParallel needs a process group: a world of one process (gloo, on the CPU)."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


# wrapper name -> (wrap, the prefix its state dict puts before the model's names)
WRAPPERS = {
    "nn.Sequential": (lambda m: nn.Sequential(m), "0."),
    "parent module": (Parent, "net."),
    "DistributedDataParallel": (lambda m: nn.parallel.DistributedDataParallel(m), "module."),
    "torch.compile": (torch.compile, "_orig_mod."),
    "AveragedModel": (AveragedModel, "module."),
}


@pytest.fixture(scope="module")
def built():
    """Two models of each layout with different weights, built once (drawing 61M weights takes a while)."""
    models = {}
    for seed, (name, build) in enumerate(LAYOUTS.items()):
        torch.manual_seed(seed)
        first = build()
        torch.manual_seed(seed + 10)
        models[name] = first, build()
    return models


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bare_layout_saves_canonical_names(layout, built):
    state = built[layout][0].state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == canonical_shapes(CLASSES)


@pytest.mark.parametrize("wrapper", WRAPPERS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_wrapped_layout_saves_prefixed_canonical_names_and_loads_them_back(layout, wrapper, built, request):
    if wrapper == "DistributedDataParallel":
        request.getfixturevalue("one_process_group")
    wrap, prefix = WRAPPERS[wrapper]
    model, other_model = built[layout]
    canonical = model.state_dict()
    before = other_model.state_dict()
    saved = wrap(model).state_dict()
    ours = {k: v for k, v in saved.items() if k.startswith(prefix)}
    assert ours.keys() == {prefix + name for name in canonical_shapes(CLASSES)}
    assert all(torch.equal(ours[prefix + k], v) for k, v in canonical.items())

    other = wrap(other_model)  # other weights, which the load must overwrite
    assert not torch.equal(other.state_dict()[prefix + "conv1.weight"], canonical["conv1.weight"])
    try:
        other.load_state_dict(saved)
        again = other.state_dict()
        assert again.keys() == saved.keys()
        assert all(torch.equal(again[k], v) for k, v in saved.items())
    finally:
        other_model.load_state_dict(before)  # the next test starts from the other weights again


def test_wrapped_state_dict_of_another_architecture_is_one_sentence(built):
    saved = nn.Sequential(built["merged"][0]).state_dict()
    with pytest.raises(ValueError, match=r"state dict entry conv1.weight .* build the model with the num_classes"):
        nn.Sequential(AlexNet(CLASSES, in_channels=1)).load_state_dict(saved)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_strict_false_loads_what_is_there_and_lists_the_rest(layout, built):
    """As torch does: the entries given are loaded, missing and unexpected ones are listed (canonical names)."""
    model, other = built[layout]
    saved, before = model.state_dict(), other.state_dict()
    partial = {k: v for k, v in saved.items() if k not in ("fc8.bias", "conv2.weight")}
    partial["extra.weight"] = torch.zeros(2)
    try:
        result = other.load_state_dict(partial, strict=False)
        assert sorted(result.missing_keys) == ["conv2.weight", "fc8.bias"]
        assert result.unexpected_keys == ["extra.weight"]
        now = other.state_dict()
        for name in saved:
            assert torch.equal(now[name], (before if name in ("fc8.bias", "conv2.weight") else saved)[name]), name
        wrapped = nn.Sequential(other).load_state_dict({"0." + k: v for k, v in partial.items()}, strict=False)
        assert sorted(wrapped.missing_keys) == ["0.conv2.weight", "0.fc8.bias"]
        assert wrapped.unexpected_keys == ["0.extra.weight"]
    finally:
        other.load_state_dict(before)
    with pytest.raises(ValueError, match=r"missing \['conv2.weight', 'fc8.bias'\], unexpected \['extra.weight'\]"):
        other.load_state_dict(partial)  # strict, the default: refused before anything is copied
    assert all(torch.equal(other.state_dict()[k], v) for k, v in before.items())
    misshapen = dict(partial, **{"fc7.bias": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"fc7.bias has shape \(3,\) but this model needs \(4096,\)"):
        other.load_state_dict(misshapen, strict=False)  # a shape mismatch is an error either way, as in torch
