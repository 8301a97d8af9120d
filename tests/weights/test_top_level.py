"""The package's top level as a torchvision user meets it: `alexnet2gpu.load` (the hub entry's loader) and
`alexnet2gpu.transforms` (the evaluation input for the weights), end to end on a JPEG file."""
import pytest
import torch
from PIL import Image

import alexnet2gpu
from alexnet2gpu.data.preprocess import EvalTransform
from alexnet2gpu.weights.hub import load_network
from alexnet2gpu.weights.io import load_weights, save_safetensors
from tests.data.test_preprocess import evaluation_input, write_photo
from tests.helpers.weights import write_untrained_checkpoint


@pytest.fixture(scope="module")
def checkpoint(module_tmp):
    return write_untrained_checkpoint(module_tmp("run"), num_classes=4)


def test_load_is_the_hub_loader(checkpoint):
    net = alexnet2gpu.load(checkpoint)
    assert alexnet2gpu.load is load_network and "load" in alexnet2gpu.__all__
    want = load_weights(checkpoint)
    assert (net.classes, net.mean, net.crop) == (want.classes, want.mean, 224)
    assert all(torch.equal(t, want.model[k]) for k, t in net.state_dict().items())


def test_transforms_of_the_loaded_network_feed_it_what_evaluation_does(checkpoint, tmp_path):
    net = alexnet2gpu.load(checkpoint).eval()
    path = write_photo(tmp_path / "photo.jpg", 400, 300)
    preprocess = alexnet2gpu.transforms(net)
    assert isinstance(preprocess, EvalTransform) and (preprocess.mean, preprocess.crop) == (net.mean, 224)
    with torch.no_grad():
        got = net(preprocess(Image.open(path))[None])
        want = net(evaluation_input(path, 224, mean=net.mean)[None])
    assert torch.equal(got, want)
    # the same numbers from the weights themselves: a path, or what load_weights read
    save_safetensors(load_weights(checkpoint), tmp_path / "w.safetensors")
    for source in (checkpoint, str(tmp_path / "w.safetensors"), load_weights(checkpoint)):
        transform = alexnet2gpu.transforms(source)
        assert (transform.mean, transform.crop) == (net.mean, 224)


def test_a_network_without_weights_has_no_transforms_and_says_why(checkpoint):
    with pytest.raises(ValueError, match=r"this AlexNet carries no training mean: load the network with its weights, "
                                         r"alexnet2gpu.load\(WEIGHTS\), or pass the numbers to .*EvalTransform"):
        alexnet2gpu.transforms(alexnet2gpu.AlexNet(num_classes=4))
    bare = load_weights(checkpoint)
    bare.mean = None  # weights another tool wrote may carry none
    with pytest.raises(ValueError, match=f"the weights in {bare.path} carry no training mean"):
        alexnet2gpu.transforms(bare)
