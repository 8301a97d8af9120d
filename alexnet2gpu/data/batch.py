"""A loader batch and how a worker's items become one (`collate`): decoded crops (the CPU path), or, for
FolderDataset(decode="gpu"), encoded files for the device plus the crops of the CPU share."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch


class Unreadable(NamedTuple):
    """A FolderDataset item that could not be read, and why (collate names it in Batch.corrupt)."""
    reason: str


class EncodedImage(NamedTuple):
    """One FolderDataset(decode="gpu") item: what the device needs to decode and crop it as the CPU would."""
    data: torch.Tensor  # the file's bytes, 1-D uint8
    alphas: torch.Tensor
    label: int
    crop_flip: torch.Tensor  # (x offset, y offset, flip) int32
    mode: str
    in_channels: int
    crop: int


class DecodedImage(NamedTuple):
    """One FolderDataset(decode="gpu") item of the CPU share: decoded and cut in the worker."""
    image: torch.Tensor  # C x crop x crop (ten crops: 10 x C x crop x crop) uint8
    alphas: torch.Tensor
    label: int
    crop_flip: torch.Tensor
    mode: str
    in_channels: int
    crop: int


@dataclass
class Batch:
    images: torch.Tensor | None  # N x C x crop x crop (ten crops: N x 10 x C x crop x crop), uint8; None while encoded
    alphas: torch.Tensor  # N x 3 PCA noise coefficients (zeros outside training)
    targets: torch.Tensor  # N
    corrupt: list[str]  # paths skipped in this batch because they could not be read
    seconds: float = 0.0  # time the loader spent on this batch (for encoded files: reading only)
    # FolderDataset(decode="gpu") batches: still-encoded files, decoded on the device by gpu/decode.py, and the
    # crops of the CPU share (`decoded_in_worker`), which the workers decoded. The bytes travel as one tensor:
    # a worker hands each tensor over with its own file descriptor, and N per batch times the prefetched
    # batches would pass the usual limit of 1024 open files.
    encoded: torch.Tensor | None = None  # the encoded files' bytes end to end, 1-D uint8
    encoded_sizes: list[int] | None = None  # each encoded file's length in bytes, in batch order
    crop_flip: torch.Tensor | None = None  # N x 3 int32: x offset, y offset, flip (0/1) of each image's crop
    paths: list[str] | None = None  # N file paths, to name the images the device cannot decode
    mode: str | None = None  # the dataset's mode: train, center or ten
    in_channels: int = 0
    crop: int = 0
    reasons: dict = dataclasses.field(default_factory=dict)  # corrupt path -> why it could not be read, where known
    decoded: torch.Tensor | None = None  # the CPU share's crops, as `images` (None: none in this batch)
    decoded_at: list[int] | None = None  # their positions in the batch; the encoded files fill the others

    def __len__(self) -> int:
        return len(self.targets)

    def files(self) -> list[torch.Tensor]:
        """Each encoded file's bytes (views of `encoded`)."""
        return list(self.encoded.split(self.encoded_sizes))

    def encoded_at(self) -> list[int]:
        """The batch positions of the encoded files, in the order of `files()`."""
        here = set(self.decoded_at or ())
        return [i for i in range(len(self)) if i not in here]

    def pin_memory(self):
        # The encoded bytes stay in pageable memory: the JPEG decoder reads them on the host.
        pin = lambda t: None if t is None else t.pin_memory()
        return dataclasses.replace(self, images=pin(self.images), alphas=pin(self.alphas), targets=pin(self.targets),
                                   crop_flip=pin(self.crop_flip), decoded=pin(self.decoded))


def collate(items) -> Batch:
    unread = lambda item: item is None or isinstance(item, Unreadable)
    good = [item for item, _, _ in items if not unread(item)]
    corrupt = [path for item, path, _ in items if unread(item)]
    reasons = {path: item.reason for item, path, _ in items if isinstance(item, Unreadable)}
    seconds = sum(s for _, _, s in items)
    if not good:
        empty = torch.zeros(0, dtype=torch.uint8)
        return Batch(empty, torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), corrupt, seconds, reasons=reasons)
    if isinstance(good[0], (EncodedImage, DecodedImage)):
        first, paths = good[0], [path for item, path, _ in items if not unread(item)]
        encoded = [g.data for g in good if isinstance(g, EncodedImage)]
        here = [i for i, g in enumerate(good) if isinstance(g, DecodedImage)]
        decoded = stack_crops([good[i].image for i in here]) if here else None
        return Batch(None, torch.stack([g.alphas for g in good]), torch.tensor([g.label for g in good]), corrupt,
                     seconds, torch.cat(encoded) if encoded else torch.zeros(0, dtype=torch.uint8),
                     [len(e) for e in encoded], torch.stack([g.crop_flip for g in good]), paths, first.mode,
                     first.in_channels, first.crop, reasons, decoded, here or None)
    images, alphas, targets = zip(*good)
    return Batch(stack_crops(images), torch.stack(alphas), torch.tensor(targets), corrupt, seconds, reasons=reasons)


def stack_crops(crops) -> torch.Tensor:
    """uint8 crops, each C x H x W (ten crops: 10 x C x H x W), as one N x C x H x W (N x 10 x C x H x W) batch
    whose memory is channels-last. The loader cuts each crop as a view of H x W x C pixels (decoders give that),
    so the batch is one plain copy of them: stacked into N x C x H x W memory, every byte moved to a new place,
    it took 5x the time on a 2-core CPU (docs/benchmarks.md). In a loader worker the batch is written straight
    into shared memory, as torch's default_collate does: the queue to the training process would copy it there."""
    pixels_last = (1, 2, 0) if crops[0].dim() == 3 else (0, 2, 3, 1)
    planes_first = (0, 3, 1, 2) if crops[0].dim() == 3 else (0, 1, 4, 2, 3)
    inner = [crop.permute(pixels_last) for crop in crops]
    shape = (len(inner),) + tuple(inner[0].shape)
    out = None
    if torch.utils.data.get_worker_info() is not None:
        storage = torch.UntypedStorage._new_shared(math.prod(shape) * inner[0].element_size())
        out = torch.empty(0, dtype=inner[0].dtype).set_(storage).view(shape)
    return torch.stack(inner, out=out).permute(planes_first)
