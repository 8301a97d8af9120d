"""Loader batches to model input on the device: the mean, the colour noise and the memory layout applied in one
pass (`to_model_input`), how a run wants them (`InputSpec`, which also hands JPEG batches to the GPU decoder), and
a model's class probabilities over one crop or ten (`crop_probabilities`, paper §4.1). Shared by training,
evaluation, predict and bench."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from alexnet2gpu.distributed.device import AMP_DTYPES, autocast

from .folders import PCA_NOISE
from .prefetch import device_batches


@functools.lru_cache(maxsize=None)
def pca_noise_on(pca: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """PCA_NOISE[pca] on `device`, copied once: a copy from the host each batch would wait for the GPU."""
    strength, vectors = PCA_NOISE[pca]
    return strength.to(device), vectors.T.contiguous().to(device)


def to_model_input(images: torch.Tensor, alphas: torch.Tensor, mean: torch.Tensor, pca: str | None,
                   device, channels_last: bool = False, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 crops -> float on `device`, mean subtracted on the 0..255 scale, plus PCA colour noise.
    Copies from pinned batches do not wait; `mean` is best already on `device` (a copy otherwise).
    The mean and the noise are folded into one offset per image and channel, so the images are read once and
    the float maps written once, in their final layout, where converting, subtracting, adding and re-laying
    them out would each pass over the whole batch. Computed in float32 and rounded once to `dtype` as it is
    written: bfloat16 gives the very values autocast would cast conv1's float32 input to."""
    device = torch.device(device)
    x = images.to(device, non_blocking=True)
    offset = mean.to(device, non_blocking=True).float().view((1,) * (x.dim() - 3) + (-1, 1, 1))  # over N, crops
    if pca and pca != "none":
        strength, vectors_t = pca_noise_on(pca, device)
        shift = (alphas.to(device, non_blocking=True) * strength) @ vectors_t  # N x 3 in R, G, B
        offset = offset - shift.view(len(shift), 3, 1, 1)  # x - mean + shift
    layout = torch.channels_last if channels_last and x.dim() == 4 else torch.contiguous_format
    out = torch.empty(x.shape, dtype=dtype, device=device, memory_format=layout)
    return torch.sub(x, offset, out=out)


@dataclass
class InputSpec:
    """How uint8 batches become model input: where, minus which mean, with which colour noise."""

    device: torch.device
    mean: torch.Tensor
    pca: str | None = None
    channels_last: bool = False
    amp: str | None = None  # "bf16" on CUDA

    def __post_init__(self):
        self.mean = self.mean.to(self.device)  # once: a copy from the host per batch would wait for the GPU

    def __call__(self, batch, train: bool) -> torch.Tensor:
        if batch.images is None:
            raise ValueError("this batch still holds JPEG bytes: pass it through InputSpec.decode first.")
        return to_model_input(batch.images, batch.alphas, self.mean, self.pca if train else None,
                              self.device, self.channels_last, self.input_dtype)

    @property
    def input_dtype(self) -> torch.dtype:
        """bf16 under --amp bf16 on CUDA: autocast's conv1 reads its input in bf16 anyway, so writing it so halves
        the maps' traffic (and a CUDA graph's copy of them) with the same values; float32 otherwise."""
        return AMP_DTYPES[self.amp] if self.amp and self.device.type == "cuda" else torch.float32

    def batches(self, loader, train: bool):
        """(batch, model input, targets) on the device for each batch of `loader`; on CUDA the next batch's
        are made on a side stream while the current step runs (prefetch.py)."""
        prepare = lambda b: (self(b, train), b.targets.to(self.device, non_blocking=True))
        for batch, (images, targets) in device_batches(loader, prepare, self.device):
            yield batch, images, targets

    def decode(self, batch, decoded=None):
        """A batch of JPEG bytes (FolderDataset(decode="gpu")) decoded and cropped on `device`, images no
        decoder can read dropped and named in batch.corrupt; any other batch as it is. `decoded`: its files
        decoded already (`decode_files`, in another thread)."""
        if getattr(batch, "encoded", None) is None:
            return batch
        from .gpu.decode import decode_batch  # imports torchvision's decoders only for the GPU data path
        return decode_batch(batch, self.device, decoded)

    def decode_files(self, batch) -> tuple:
        """The first half of `decode`, for a thread of its own: (batch, its JPEG files decoded on `device`), or
        (batch, None) for a batch that holds no JPEG bytes."""
        if getattr(batch, "encoded", None) is None:
            return batch, None
        from .gpu.decode import decode_encoded
        return batch, decode_encoded(batch, self.device)

    def autocast(self):
        return autocast(self.device, self.amp)


def crop_probabilities(model, x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """N x classes softmax probabilities; ten-crop input (N x 10 x C x H x W) averages the crops'
    probabilities, not their logits (paper §4.1)."""
    crops = x.shape[1] if x.dim() == 5 else 1
    with spec.autocast():
        logits = model(x.flatten(0, 1) if crops > 1 else x).float()
    return logits.softmax(dim=1).view(x.shape[0], crops, -1).mean(dim=1)
