"""The evaluation transform (data/preprocess.py) against the project's own evaluation path on JPEG files:
load_image, FolderDataset's centre crop and to_model_input, as --evaluate and predict --center-crop feed it."""
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter
from torchvision.io import decode_image

from alexnet2gpu.data.device_input import to_model_input
from alexnet2gpu.data.folders import FolderDataset
from alexnet2gpu.data.preprocess import EvalTransform

MEAN = [120.5, 115.25, 100.0]


def write_photo(path, width: int, height: int, seed: int = 0) -> str:
    """A JPEG with what photos have: smooth regions, edges and sensor noise (quality 90)."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8))
    im = base.resize((width, height), Image.BICUBIC).filter(ImageFilter.GaussianBlur(2))
    draw = ImageDraw.Draw(im)
    for _ in range(30):
        x, y = rng.integers(0, width), rng.integers(0, height)
        draw.ellipse([x, y, x + rng.integers(5, width // 3), y + rng.integers(5, height // 3)],
                     fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    noisy = np.asarray(im).astype(np.float64) + rng.normal(0, 12, (height, width, 3))
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, quality=90)
    return str(path)


def evaluation_input(path: str, crop: int, mean=MEAN) -> torch.Tensor:
    """The network's input for `path` as the evaluation path makes it."""
    (image, alphas, _), _, _ = FolderDataset([(path, 0)], "center", len(mean), crop=crop)[(0, 0)]
    return to_model_input(image[None], alphas[None], torch.tensor(mean), None, "cpu")[0]


@pytest.fixture(scope="module")
def photos(module_tmp):
    folder = module_tmp("photos")
    # landscape; portrait whose longer side rounds up (457 * 256/300 = 389.97: torchvision's Resize would take
    # 389); a prepared 256x256 file; one JPEG large enough for load_image's reduced-scale decoding
    sizes = {"landscape": (400, 300), "portrait": (300, 457), "prepared": (256, 256), "large": (1024, 768)}
    return {name: write_photo(folder / f"{name}.jpg", *size, seed=i) for i, (name, size) in enumerate(sizes.items())}


# torchvision 0.29 deprecates its decoders in favour of torchcodec's; decode_image still gives the uint8 tensor
DECODERS_DEPRECATED = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


@DECODERS_DEPRECATED
@pytest.mark.parametrize("crop", [224, 227])
@pytest.mark.parametrize("name", ["landscape", "portrait", "prepared"])
def test_path_pil_image_and_uint8_tensor_give_the_evaluation_input_bit_for_bit(photos, name, crop):
    path, transform = photos[name], EvalTransform(MEAN, crop)
    want = evaluation_input(path, crop)
    assert want.shape == (3, crop, crop)
    for image in (path, Image.open(path), Image.open(path).convert("RGB"), decode_image(path)):
        got = transform(image)
        assert got.dtype == torch.float32 and got.is_contiguous()
        assert torch.equal(got, want), type(image)


@DECODERS_DEPRECATED
def test_a_large_jpeg_is_exact_from_its_path_and_close_when_decoded(photos):
    """load_image decodes a JPEG of 512 or more on both sides at a reduced scale (PIL's draft): its path gives the
    evaluation input exactly; the image decoded at full size gives it to a grey level or two on average."""
    path, transform = photos["large"], EvalTransform(MEAN, 224)
    want = evaluation_input(path, 224)
    assert torch.equal(transform(path), want)
    for image in (Image.open(path), decode_image(path)):
        difference = (transform(image) - want).abs()
        assert 0 < difference.mean() < 3


def test_grey_weights_take_one_channel(photos):
    """load_image decodes a colour JPEG straight to grey (the JPEG's own luma): its path gives that exactly; the
    image decoded in colour goes through PIL's RGB-to-grey, a fraction of a grey level away on average."""
    path = photos["landscape"]
    transform = EvalTransform([110.0], 224)
    want = evaluation_input(path, 224, mean=[110.0])
    assert want.shape == (1, 224, 224) and torch.equal(transform(path), want)
    assert (transform(Image.open(path)) - want).abs().mean() < 0.5


def test_the_steps_are_said_and_no_std_divides():
    text = repr(EvalTransform(MEAN, 227))
    assert "centre 227x227" in text and "no division by a std" in text and "Normalize" in text
    flat = torch.full((3, 300, 300), 200, dtype=torch.uint8)
    assert torch.equal(EvalTransform(MEAN, 224)(flat)[:, 0, 0], torch.tensor([79.5, 84.75, 100.0]))


@pytest.mark.parametrize("call, error, match", [
    (lambda: EvalTransform([1.0, 2.0]), ValueError, r"mean must be one number per channel .* got \[1.0, 2.0\]"),
    (lambda: EvalTransform(MEAN, 256), ValueError, r"crop must be 224 \(the paper's\) or 227 \(caffe's\), got 256"),
    (lambda: EvalTransform(MEAN)(torch.rand(3, 300, 300)), ValueError, r"uint8 tensor .* got torch.float32 3 x 300"),
    (lambda: EvalTransform(MEAN)(torch.zeros(2, 3, 300, 300, dtype=torch.uint8)), ValueError, "one image at a time"),
    (lambda: EvalTransform(MEAN)(np.zeros((300, 300, 3), np.uint8)), TypeError, r"got numpy.ndarray: open the image"),
])
def test_mistakes_are_one_sentence(call, error, match):
    with pytest.raises(error, match=match):
        call()
