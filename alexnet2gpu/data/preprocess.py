"""One image as the network takes it at evaluation, as a torchvision-style transform (`EvalTransform`): the
centre crop that `train.py --evaluate` and `predict --center-crop` feed the network, minus the weights' mean.

    net = alexnet2gpu.load("runs/RUN").eval()
    preprocess = alexnet2gpu.transforms(net)        # the weights' mean and crop
    logits = net(preprocess(Image.open("photo.jpg"))[None])

The steps are the evaluation path's (paper §2, §4.1; folders.py load_image, FolderDataset "center",
device_input.to_model_input): shorter side to 256 and the centre 256x256 with the project's own PIL resize
(imaging.resize_center), then torchvision.transforms.v2: the centre crop (224, or 227 for caffe-cropped
weights), float32, minus the per-channel mean on the 0..255 scale. No division by a standard deviation: the
paper subtracts the mean only. v2.Resize is not used for the 256 step: it rounds the longer side down where
load_image rounds it to nearest, and on tensors it resamples otherwise than PIL, so the pixels would differ.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from alexnet2gpu.model.layers import CROPS

from .folders import load_image
from .imaging import RESIZE, resize_center, to_grey, to_rgb


class EvalTransform(torch.nn.Module):
    """image -> C x crop x crop float32 on the 0..255 scale, `mean` subtracted per channel.

    The image: a file's path, read by the evaluation path's own `load_image`, which gives the evaluation
    path's input bit for bit; a PIL image; or a C x H x W uint8 tensor (torchvision.io.decode_image's). An
    image given already decoded gives it bit for bit too, except a JPEG of 512 pixels or more on both sides:
    load_image decodes that one at a reduced scale (PIL's draft), which decoded pixels cannot repeat, so it
    differs by a grey level or two on average; with grey weights (one channel) load_image reads a colour JPEG's
    own luma, and a colour image given decoded differs by a fraction of a grey level (docs/using-weights.md).
    """

    def __init__(self, mean, crop: int = 224):
        super().__init__()
        if not (isinstance(mean, (list, tuple)) and len(mean) in (1, 3)
                and all(isinstance(m, (int, float)) and not isinstance(m, bool) for m in mean)):
            raise ValueError(f"mean must be one number per channel on the 0..255 scale (3 for RGB, 1 for grey), "
                             f"got {mean!r}: pass e.g. mean=[123.7, 116.3, 103.5] or the weights' .mean.")
        if crop not in CROPS:
            raise ValueError(f"crop must be 224 (the paper's) or 227 (caffe's), got {crop!r}: pass the weights' .crop.")
        from torchvision.transforms import v2  # imported on first use: `import alexnet2gpu` stays light

        self.mean, self.crop, self.channels = [float(m) for m in mean], crop, len(mean)
        # std 1: v2.Normalize's (x - mean) / std is then exactly to_model_input's x - mean
        self.tail = v2.Compose([v2.CenterCrop(crop), v2.ToDtype(torch.float32),
                                v2.Normalize(self.mean, [1.0] * self.channels)])

    def extra_repr(self) -> str:
        return (f"shorter side to {RESIZE} (PIL bilinear), centre {RESIZE}x{RESIZE}, centre {self.crop}x{self.crop}, "
                f"float32 minus mean {[round(m, 2) for m in self.mean]} on 0..255, no division by a std")

    def forward(self, image) -> torch.Tensor:
        return self.tail(self.square(image))

    def square(self, image) -> torch.Tensor:
        """The image's shorter side at 256, its centre 256x256: C x 256 x 256 uint8."""
        if isinstance(image, (str, os.PathLike)):
            pixels = load_image(os.fspath(image), self.channels)
        else:
            if isinstance(image, torch.Tensor):
                image = self._as_pil(image)
            elif not isinstance(image, Image.Image):
                raise TypeError(f"the transform takes a path, a PIL image or a C x H x W uint8 tensor, got "
                                f"{type(image).__module__}.{type(image).__name__}: open the image with PIL.Image.open.")
            image = resize_center(to_rgb(image) if self.channels == 3 else to_grey(image))
            pixels = np.asarray(image, dtype=np.uint8)
        pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
        # one copy, C x H x W in memory as the loader's batches; writable, unlike PIL's buffer
        return torch.from_numpy(np.array(pixels.transpose(2, 0, 1), order="C"))

    @staticmethod
    def _as_pil(t: torch.Tensor) -> Image.Image:
        if t.dtype != torch.uint8 or t.dim() != 3 or t.shape[0] not in (1, 3, 4):
            shape = " x ".join(map(str, t.shape))
            raise ValueError(f"the transform takes one image as a C x H x W uint8 tensor (C 1, 3 or 4), got "
                             f"{t.dtype} {shape}: pass 0..255 pixels (torchvision.io.decode_image's output), one "
                             "image at a time.")
        from torchvision.transforms.v2.functional import to_pil_image
        return to_pil_image(t.cpu())
