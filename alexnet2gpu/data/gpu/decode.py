"""JPEG decoding and cropping on the training device: the GPU data path (`--decode gpu`).

Loader workers only read the files' bytes (FolderDataset(decode="gpu")); here a batch is decoded in one
call, resized where needed, and cut with the very crops and flips the CPU path takes (the worker computed
them from (seed, epoch, index) as it always does), so the augmentation is the same bit for bit.
tests/data/test_gpu_decode.py checks that on the CPU, where decode_jpeg runs libjpeg and gives PIL's pixels.

Decoder: torchvision.io.decode_jpeg on a list of tensors, which is one batched nvJPEG decode on CUDA. Measured on an H200 box: 30.0 k images/s on 256x256 JPEGs, against 22.0 k/s for
torchcodec 0.17 (identical pixels), and it needs no new dependency. torchvision deprecated its image decoding
in 0.29 but ships it in 0.26 to 0.29, so that one DeprecationWarning is silenced around our calls. Successor
when torchvision drops it: torchcodec.decoders.decode_jpeg (the same list-of-tensors call). NVIDIA's
nvImageCodec was measured too and was slower on every setup tried (docs/benchmarks.md).

Images nvJPEG cannot decode (CMYK, some progressive files, PNG or other formats, broken files) make the
batch call raise; then the batch is decoded in halves, down to single images, and an image that still fails
on the device is decoded on the CPU (torchvision.io.decode_image, then PIL) and moved to the device. An
image nothing can decode is dropped: `decode_images` returns the batch positions it kept beside the crops,
`decode_batch` a batch without the dropped images (their labels and colour noise removed too) that names them
in `corrupt`, which the training loop logs and counts as it does for files the workers could not read.

The CPU share: torchvision's batched decode serves one call at a time per process, and each call holds its
thread until the batch is decoded (on H100/H200 by the hardware JPEG decoder), so one call's rate caps the
device path while the loader workers' cores idle. FolderDataset(decode="gpu", cpu_share=f) has the workers
decode a share f of the images themselves (`decode_in_worker`: libjpeg-turbo through
torchvision.io.decode_jpeg, the same fallbacks, the same resize) and cut their crops; the batch carries those
crops beside the other images' bytes, and `decode_images` puts both into one tensor in batch order.
`--cpu-decode-share auto` balances the two by their rates (`resolve_cpu_share`).

Unprepared data: an image that is not 256x256 is resized on the device with data.load_image's geometry
(shorter side to 256, bilinear with antialiasing, the centre 256x256). Its pixels differ slightly from the
CPU path's (PIL decodes JPEGs at a reduced scale first and resamples its own way), which is why
`--decode auto` picks the GPU only for prepared data, whose images are all 256x256 already.
"""
from __future__ import annotations

import contextlib
import io
import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from alexnet2gpu.errors import TrainError

from ..batch import Batch
from ..imaging import RESIZE
from ..prepare.prepare import is_prepared

READ_MODES = {1: "GRAY", 3: "RGB"}  # torchvision.io.ImageReadMode names by channel count
CROP_MODES = ("train", "center", "ten")
CPU = torch.device("cpu")

# Decode rates, images/s of 256x256 JPEGs, that set `--cpu-decode-share auto` (docs/benchmarks.md, the GPU
# data path): one loader worker decoding and cropping with torchvision.io.decode_jpeg on its core, and
# nvJPEG's batched decode on one GPU with its host thread in the training process.
WORKER_DECODE_RATE = 1500
GPU_DECODE_RATE = 28000


def resolve_decode(decode: str, device: torch.device, root) -> str:
    """--decode as a run uses it: "auto" is "gpu" on a CUDA device with prepared data (all images 256x256
    JPEGs, so both paths give the same pixels), else "cpu"; "gpu" needs a CUDA device."""
    device = torch.device(device)
    if decode == "auto":
        return "gpu" if device.type == "cuda" and is_prepared(root) else "cpu"
    if decode == "gpu" and device.type != "cuda":
        raise TrainError(f"--decode gpu needs a CUDA device and this run is on {device}: leave --decode out "
                         "or pass --decode cpu.")
    if decode not in ("cpu", "gpu"):
        raise TrainError(f"--decode {decode!r}: choose auto, cpu or gpu.")
    return decode


def resolve_cpu_share(share, workers: int) -> float:
    """--cpu-decode-share as a run uses it: a number from 0 to 1 as it is; "auto" the workers' part of the
    summed decode rate, W*c / (W*c + G) for W workers decoding c images/s each and the GPU's G, so both sides
    finish a batch at once (0 without worker processes: the training process is the GPU's host thread)."""
    if share == "auto":
        cpu = max(0, workers) * WORKER_DECODE_RATE
        return cpu / (cpu + GPU_DECODE_RATE)
    try:
        value = float(share) if not isinstance(share, bool) else math.nan
    except (TypeError, ValueError):
        value = math.nan
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise TrainError(f"--cpu-decode-share {share!r}: pass auto or the fraction of JPEGs the loader workers decode, "
                         "a number from 0 to 1.")
    return value


# ---------------------------------------------------------------- decoding

@contextlib.contextmanager
def _torchvision_io():
    """torchvision.io, imported on first use (it adds seconds to the start of every run that never decodes
    here), with its DeprecationWarning silenced: torchvision >= 0.29 warns on every decode call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                                category=DeprecationWarning)
        import torchvision.io
        yield torchvision.io


def import_decoders() -> None:
    """Import torchvision.io now: loader workers forked afterwards then share it rather than each spending
    seconds importing it before their first image of the CPU share."""
    with _torchvision_io():
        pass


def decode_on_device(files: list[torch.Tensor], device: torch.device, in_channels: int) -> list[torch.Tensor]:
    """All files in one call (nvJPEG on CUDA, libjpeg on the CPU): C x H x W uint8 each on `device`; raises
    when any one of them cannot be decoded."""
    with _torchvision_io() as tvio:
        return list(tvio.decode_jpeg(files, device=device, mode=tvio.ImageReadMode[READ_MODES[in_channels]]))


def decode_on_cpu(data: torch.Tensor, in_channels: int) -> torch.Tensor | None:
    """One file that is no JPEG nvJPEG reads: torchvision's decoders, then PIL; None when neither can."""
    try:
        with _torchvision_io() as tvio:
            image = tvio.decode_image(data, mode=tvio.ImageReadMode[READ_MODES[in_channels]])
        if image.dim() == 3 and image.dtype == torch.uint8 and image.shape[0] == in_channels:
            return image
    except Exception:  # RuntimeError for formats it does not know or broken files
        pass
    try:
        with Image.open(io.BytesIO(data.numpy().tobytes())) as im:
            a = np.asarray(im.convert("RGB" if in_channels == 3 else "L"), dtype=np.uint8)
    except Exception:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        return None
    return torch.from_numpy(a.reshape(a.shape[0], a.shape[1], in_channels).copy()).permute(2, 0, 1)


def decode_files(files: list[torch.Tensor], device: torch.device, in_channels: int) -> list[torch.Tensor | None]:
    """Each file decoded to C x H x W uint8 on `device`, None where no decoder can read it.

    One file nvJPEG refuses fails the whole call, so a failed call is split in halves and each half tried
    again, down to single files, which then go to the CPU decoders: one odd file in a batch of 256 costs about
    16 calls rather than 256."""
    try:
        return decode_on_device(files, device, in_channels)
    except Exception:
        if len(files) > 1:
            half = len(files) // 2
            return decode_files(files[:half], device, in_channels) + decode_files(files[half:], device, in_channels)
    return [_moved(device, decode_on_cpu(files[0], in_channels))]


def _moved(device: torch.device, image: torch.Tensor | None) -> torch.Tensor | None:
    return None if image is None else image.to(device)


def decode_in_worker(data: torch.Tensor, in_channels: int) -> torch.Tensor | None:
    """One file of the CPU share, decoded in a loader worker exactly as `decode_images` decodes it on a CPU
    device: C x 256 x 256 uint8, None when no decoder can read it."""
    image = decode_files([data], CPU, in_channels)[0]
    return None if image is None else to_256(image)


# ---------------------------------------------------------------- geometry

def to_256(image: torch.Tensor) -> torch.Tensor:
    """C x H x W uint8 -> C x 256 x 256 as folders.load_image: shorter side to 256, then the centre."""
    _, h, w = image.shape
    if (h, w) == (RESIZE, RESIZE):
        return image
    scale = RESIZE / min(w, h)
    new_w, new_h = max(RESIZE, round(w * scale)), max(RESIZE, round(h * scale))
    x = F.interpolate(image[None].float(), size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
    left, top = (new_w - RESIZE) // 2, (new_h - RESIZE) // 2
    return x[0, :, top:top + RESIZE, left:left + RESIZE].round().clamp(0, 255).to(torch.uint8)


def stack_images(images: list[torch.Tensor]) -> torch.Tensor:
    """N x C x 256 x 256 in the decoders' own memory layout: nvJPEG gives planes, libjpeg channels-last views
    (stacked as they are, they need no transposing copy; the crops read either layout)."""
    if all(image.is_contiguous() for image in images):
        return torch.stack(images)
    return torch.stack([image.permute(1, 2, 0) for image in images]).permute(0, 3, 1, 2)


def crop_windows(images: torch.Tensor, ox: torch.Tensor, oy: torch.Tensor, flip: torch.Tensor, crop: int) -> torch.Tensor:
    """N x C x 256 x 256 and K windows per image (ox, oy, flip: N x K) -> N x K x C x crop x crop, in one
    indexing operation: column j of a flipped window is column crop-1-j of the unflipped one."""
    n, c = images.shape[:2]
    steps = torch.arange(crop, device=images.device)
    rows = oy[..., None] + steps  # N x K x crop
    cols = torch.where(flip[..., None].bool(), ox[..., None] + (crop - 1) - steps, ox[..., None] + steps)
    image_index = torch.arange(n, device=images.device).view(n, 1, 1, 1, 1)
    channel_index = torch.arange(c, device=images.device).view(1, 1, c, 1, 1)
    return images[image_index, channel_index, rows[:, :, None, :, None], cols[:, :, None, None, :]]


def ten_windows(n: int, crop: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """data.ten_crops' windows: the four corners and the centre, then their mirror images (N x 10 each)."""
    far = RESIZE - crop
    c = far // 2
    corners = torch.tensor([(0, 0), (far, 0), (0, far), (far, far), (c, c)] * 2, device=device)
    flip = torch.tensor([0] * 5 + [1] * 5, device=device)
    return corners[:, 0].expand(n, 10), corners[:, 1].expand(n, 10), flip.expand(n, 10)


def crop_batch(images: torch.Tensor, crop_flip: torch.Tensor | None, mode: str, crop: int) -> torch.Tensor:
    """N x C x 256 x 256 -> the CPU path's crops: train N x C x crop x crop at each image's (ox, oy, flip),
    center the centre crop, ten N x 10 x C x crop x crop."""
    n, device = len(images), images.device
    if mode == "ten":
        return crop_windows(images, *ten_windows(n, crop, device), crop)
    if mode == "train":
        ox, oy, flip = crop_flip.to(device, non_blocking=True).long().unbind(1)
    else:
        ox = oy = torch.full((n,), (RESIZE - crop) // 2, device=device)
        flip = torch.zeros(n, dtype=torch.long, device=device)
    return crop_windows(images, ox[:, None], oy[:, None], flip[:, None], crop)[:, 0]


# ---------------------------------------------------------------- a batch

def decode_encoded(batch: Batch, device) -> list[torch.Tensor | None]:
    """The batch's encoded files decoded on `device` (None where nothing can read one), in the order of
    batch.files(): the part of `decode_images` that holds its thread, since nvJPEG's call returns only once
    the batch is decoded. A thread of its own can run it while another cuts the last batch's crops
    (loader.py)."""
    return decode_files(batch.files(), torch.device(device), batch.in_channels) if batch.encoded_sizes else []


def decode_images(batch: Batch, device, in_channels: int, mode: str, crop: int,
                  decoded: list[torch.Tensor | None] | None = None) -> tuple[torch.Tensor, list[str], list[int]]:
    """A FolderDataset(decode="gpu") batch -> (uint8 crops on `device`, paths no decoder could read, the
    positions in the batch of the images kept). Crops: N x C x crop x crop, or N x 10 x C x crop x crop for
    mode "ten", contiguous, for the kept images in batch order: the encoded files decoded and cut here, the
    workers' crops (the CPU share) copied in at their positions. `decoded`: the
    encoded files already decoded (`decode_encoded`); by default they are decoded here."""
    if in_channels not in READ_MODES:
        raise ValueError(f"in_channels {in_channels}: JPEGs decode to 1 (grey) or 3 (RGB) channels; pass 1 or 3.")
    if mode not in CROP_MODES:
        raise ValueError(f"unknown mode {mode!r}: choose train, center or ten.")
    device = torch.device(device)
    here, there = batch.decoded_at or [], batch.encoded_at()
    if decoded is None:
        decoded = decode_files(batch.files(), device, in_channels) if there else []
    elif len(decoded) != len(there):
        raise ValueError(f"{len(decoded)} decoded images for a batch of {len(there)} encoded files: pass "
                         "decode_encoded(batch, ...) of this very batch.")
    corrupt = [batch.paths[there[j]] for j, image in enumerate(decoded) if image is None]
    decoded_there = [j for j, image in enumerate(decoded) if image is not None]
    kept_there = [there[j] for j in decoded_there]
    kept = sorted(here + kept_there) if here else kept_there
    shape = (10, in_channels, crop, crop) if mode == "ten" else (in_channels, crop, crop)
    if not kept:
        return torch.zeros(0, *shape, dtype=torch.uint8, device=device), corrupt, kept
    if not kept_there:  # the whole batch decoded in the workers: no device decode at all
        return batch.decoded.to(device, non_blocking=True).contiguous(), corrupt, kept
    images = stack_images([to_256(decoded[j]) for j in decoded_there])
    crop_flip = batch.crop_flip if len(kept_there) == len(batch) else batch.crop_flip[kept_there]
    crops = crop_batch(images, crop_flip, mode, crop)
    if not here:
        return crops, corrupt, kept
    row = {position: r for r, position in enumerate(kept)}  # batch position -> row among the kept
    out = torch.empty(len(kept), *shape, dtype=torch.uint8, device=device)
    out.index_copy_(0, _on(device, [row[p] for p in kept_there]), crops)
    out.index_copy_(0, _on(device, [row[p] for p in here]), batch.decoded.to(device, non_blocking=True))
    return out, corrupt, kept


def _on(device: torch.device, values: list[int]) -> torch.Tensor:
    """An index tensor on `device`, copied without waiting for the device (a plain copy from the host would
    wait for the decoding queued before it)."""
    t = torch.tensor(values, dtype=torch.long)
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t


def decode_batch(batch: Batch, device,
                 decoded: list[torch.Tensor | None] | None = None) -> Batch:
    """The batch decoded and cropped on `device` as the CPU path would have; images no decoder can read are
    left out (with their labels and colour noise) and named in `corrupt`. `decoded`: as in `decode_images`."""
    images, corrupt, kept = decode_images(batch, device, batch.in_channels, batch.mode, batch.crop, decoded)
    alphas, targets = batch.alphas, batch.targets
    if len(kept) < len(batch):
        alphas, targets = alphas[kept], targets[kept]
    return Batch(images, alphas, targets, batch.corrupt + corrupt, batch.seconds)
