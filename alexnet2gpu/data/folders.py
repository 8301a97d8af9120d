"""Data as in the paper (paper §2, §4.1; docs/paper.md §5): class folders, decode, 256x256, crops, flips, PCA colour noise.

Workers decode and crop to uint8; the float work (mean subtraction, PCA noise) runs on the training device
(`to_model_input`), so a GPU gets uint8 batches. With `decode="gpu"` workers only read the files' bytes, and
the JPEG decoding and the same crops and flips run on the device too (gpu/decode.py), except for a share of
the images the workers decode themselves to help the device along. Every random choice
of an image's augmentation is a function of (seed, epoch, sample index) only: the two ranks of a tower pair
see bit-identical batches whatever their worker count, and a resumed run draws exactly what an
uninterrupted one would have.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from alexnet2gpu.errors import TrainError

from .batch import DecodedImage, EncodedImage, Unreadable, collate
from .imaging import IMAGE_EXTENSIONS, RESIZE, resize_center, to_grey, to_rgb, why_unreadable
from .walk import SharedFiles, class_folders, no_images, walk_classes

MEAN_FILE = "alexnet2gpu_mean.json"
DECODE_MODES = ("cpu", "gpu")

# PCA colour noise (paper §4.1): add V @ (alpha * s) to every pixel, alpha ~ N(0, 0.1^2) once per image.
# `paper`: ImageNet eigenvalues on 0..1 pixels (fb.resnet.torch) times 255, eigenvectors as columns (rows R, G, B).
# `original`: cuda-convnet2 make-data/input_meta, standard deviations on 0..255, about 2.2x stronger.
PCA_NOISE = {
    "paper": (torch.tensor([0.2175, 0.0188, 0.0045]) * 255,
              torch.tensor([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])),
    "original": (torch.tensor([19.7208, 37.0939, 121.7801]),
                 torch.tensor([[0.41796, -0.71258, -0.56351], [-0.81698, -0.02354, -0.57618],
                               [0.39731, 0.70120, -0.59200]])),
}
PCA_ALPHA_STD = 0.1
IMAGENET_MEAN = (127.3, 119.7, 104.9)  # ILSVRC's per-channel means on 0..255: benchmarks use them, no pass needed


# ---------------------------------------------------------------- folders and workers

def default_workers() -> int:
    """Loader processes when --workers is not given: the cores this process may use, minus one left to the
    training process, at least 1. Under torchrun the ranks on one machine share its cores, so each rank takes
    its share (cores / LOCAL_WORLD_SIZE) minus one. No upper bound: decoding JPEGs with PIL on the CPU needs
    every core to feed a GPU, and with --decode gpu the workers only read files and mostly sleep."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 2
    ranks_here = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, cores // ranks_here - 1)


def find_classes(folder: Path) -> list[str]:
    folder = Path(folder)
    if not folder.is_dir():
        raise TrainError(f"data folder {folder} does not exist: pass --data DIR holding train/ and val/ "
                         "folders of class folders (the ILSVRC-2012 layout), or leave --data out for the built-in set.")
    classes = class_folders(folder)
    if not classes:
        raise TrainError(f"{folder} has no class folders: put each class's images in {folder}/<class name>/.")
    return classes


def list_samples(folder: Path, classes: list[str], warn=print) -> list[tuple[str, int]]:
    """(path, label) of every image under the class folders (walk.walk_classes: each real folder once, none
    reached from two classes); a class without images is an error, as the class count would be wrong."""
    try:
        walks = walk_classes(folder, classes, warn)
    except SharedFiles as e:
        raise TrainError(str(e)) from None
    samples, empty = [], []
    for label, name in enumerate(classes):
        found = [(os.path.join(root, f), label) for root, files in walks[name] for f in files
                 if f.lower().endswith(IMAGE_EXTENSIONS)]
        samples += found
        empty += [] if found else [name]
    if not samples:
        raise TrainError(f"{folder} has class folders but no images ({', '.join(IMAGE_EXTENSIONS)}): "
                         "check the path points at the extracted images.")
    if empty:
        raise TrainError(no_images(folder, empty))
    return samples


@dataclass
class Splits:
    classes: list[str]
    train: list[tuple[str, int]]
    val: list[tuple[str, int]]


def open_folders(root, num_classes: int | None, warn=print) -> Splits:
    """Read root/train and root/val; check both have the same classes and that num_classes agrees. `warn`
    names the folders skipped while listing (walk.walk_classes)."""
    root = Path(root)
    if not root.is_dir():
        find_classes(root)  # raises the missing-folder message
    train_classes, val_classes = find_classes(root / "train"), find_classes(root / "val")
    if train_classes != val_classes:
        only_train = sorted(set(train_classes) - set(val_classes))[:3]
        only_val = sorted(set(val_classes) - set(train_classes))[:3]
        raise TrainError(f"train/ and val/ under {root} have different classes ({len(train_classes)} vs "
                         f"{len(val_classes)}; only in train: {only_train or 'none'}, only in val: {only_val or 'none'}): "
                         "give both splits the same class folders (sort ILSVRC val images into class folders first).")
    if num_classes is not None and num_classes != len(train_classes):
        raise TrainError(f"--num-classes is {num_classes} but {root / 'train'} has {len(train_classes)} class folders: "
                         f"pass --num-classes {len(train_classes)} or point --data at the right folder.")
    return Splits(train_classes, list_samples(root / "train", train_classes, warn),
                  list_samples(root / "val", val_classes, warn))


# ---------------------------------------------------------------- one image

def load_image(path: str, in_channels: int) -> np.ndarray:
    """Decode, rescale the shorter side to 256, take the centre 256x256 -> 256 x 256 x C uint8."""
    with Image.open(path) as im:
        im.draft("RGB" if in_channels == 3 else "L", (RESIZE, RESIZE))  # JPEG: decode at a reduced scale >= 256
        # 16-bit, palette, alpha, CMYK: the colours shown, in 8 bits (PIL's plain convert clips 16-bit values)
        im = resize_center(to_rgb(im) if in_channels == 3 else to_grey(im))  # a 256x256 file is used as decoded
        a = np.asarray(im, dtype=np.uint8)
    return a[:, :, None] if a.ndim == 2 else a


def augmentation(seed: int, epoch: int, index: int, crop: int) -> tuple[int, int, bool, np.ndarray]:
    """(x offset, y offset, flip, PCA alphas) of one presentation: a function of (seed, epoch, index) only."""
    rng = np.random.default_rng([seed, epoch, index])
    ox, oy = rng.integers(0, RESIZE - crop + 1, size=2)
    flip = bool(rng.random() < 0.5)
    alphas = rng.normal(0.0, PCA_ALPHA_STD, size=3).astype(np.float32)
    return int(ox), int(oy), flip, alphas


def ten_crops(a: np.ndarray, crop: int) -> np.ndarray:
    """Four corners, centre, then the mirror image of each (paper §4.1): 10 x crop x crop x C."""
    far = RESIZE - crop
    c = far // 2
    crops = [a[y:y + crop, x:x + crop] for x, y in ((0, 0), (far, 0), (0, far), (far, far), (c, c))]
    return np.stack(crops + [k[:, ::-1] for k in crops])


class FolderDataset(torch.utils.data.Dataset):
    """Samples (path, label) in one of three modes: `train` (random crop, flip, PCA alphas), `center`
    (the centre crop) or `ten` (ten crops). Items are indexed by (epoch, index) pairs from `EpochSampler`;
    an unreadable image gives None and is skipped by `collate`.

    decode="cpu" (default): the worker decodes and crops. decode="gpu": the worker reads the file's bytes and
    computes the same crop offsets and flip, and gpu.decode.decode_images decodes and crops on the device;
    except for the `cpu_share` of the samples (`decoded_in_worker`), which the worker decodes itself as the
    device path would (gpu.decode.decode_in_worker) and crops with the same parameters."""

    def __init__(self, samples: list[tuple[str, int]], mode: str, in_channels: int = 3, seed: int = 0, crop: int = 224,
                 decode: str = "cpu", cpu_share: float = 0.0):
        if mode not in ("train", "center", "ten"):
            raise ValueError(f"unknown mode {mode!r}")
        if decode not in DECODE_MODES:
            raise ValueError(f"unknown decode {decode!r}: choose cpu or gpu.")
        if not 0.0 <= cpu_share <= 1.0:
            raise ValueError(f"cpu_share {cpu_share!r}: pass a fraction from 0 to 1.")
        self.samples, self.mode, self.in_channels, self.seed, self.crop = samples, mode, in_channels, seed, crop
        self.decode, self.cpu_share = decode, cpu_share
        if decode == "gpu" and cpu_share > 0:
            from .gpu.decode import import_decoders  # on first use: only the GPU data path needs torchvision's decoders
            import_decoders()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key):
        start = time.perf_counter()
        epoch, index = key if isinstance(key, tuple) else (0, key)
        path, label = self.samples[index]
        if self.decode == "gpu":
            here = decoded_in_worker(index, self.cpu_share)
            item = (self._decoded_here if here else self._encoded)(path, label, epoch, index)
            return item, path, time.perf_counter() - start
        try:
            a = load_image(path, self.in_channels)
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for broken files; never stop a run for one
            return Unreadable(why_unreadable(e)), path, time.perf_counter() - start
        ox, oy, flip, alphas = self._augmentation(epoch, index)
        return (self._cut(a, ox, oy, flip), torch.from_numpy(alphas), label), path, time.perf_counter() - start

    def _augmentation(self, epoch: int, index: int) -> tuple[int, int, bool, np.ndarray]:
        """(x offset, y offset, flip, PCA alphas): drawn in training; outside it the centre crop (ten crops:
        fixed windows) and no noise."""
        if self.mode == "train":
            return augmentation(self.seed, epoch, index, self.crop)
        centre = (RESIZE - self.crop) // 2
        return centre, centre, False, np.zeros(3, np.float32)

    def _cut(self, a: np.ndarray, ox: int, oy: int, flip: bool) -> torch.Tensor:
        """256 x 256 x C uint8 -> the mode's crop(s) as C x crop x crop (ten: 10 x C x crop x crop)."""
        if self.mode == "ten":
            return torch.from_numpy(ten_crops(a, self.crop)).permute(0, 3, 1, 2)
        x = torch.from_numpy(a[oy:oy + self.crop, ox:ox + self.crop].copy())
        # torch.flip: a fraction of the time of NumPy's copy of a reversed view of 3-byte pixels
        return (x.flip(1) if flip else x).permute(2, 0, 1)

    def _read(self, path: str) -> torch.Tensor | None:
        """The file's bytes, 1-D uint8, or None when it cannot be read or is empty (no image)."""
        try:
            data = torch.from_numpy(np.fromfile(path, dtype=np.uint8))
        except (OSError, ValueError):
            return None
        return data if data.numel() else None

    def _encoded(self, path: str, label: int, epoch: int, index: int) -> EncodedImage | None:
        """The file's bytes and its augmentation, or None when the file cannot be read."""
        data = self._read(path)
        if data is None:
            return None
        ox, oy, flip, alphas = self._augmentation(epoch, index)
        crop_flip = torch.tensor([ox, oy, int(flip)], dtype=torch.int32)
        return EncodedImage(data, torch.from_numpy(alphas), label, crop_flip, self.mode, self.in_channels, self.crop)

    def _decoded_here(self, path: str, label: int, epoch: int, index: int) -> DecodedImage | Unreadable | None:
        """The file decoded on this worker's CPU as the device path decodes it, then cut as `_encoded`'s
        parameters say; None when the file cannot be read, Unreadable when no decoder reads it."""
        from .gpu.decode import decode_in_worker  # on first use: only the GPU data path needs torchvision's decoders
        data = self._read(path)
        if data is None:
            return None
        image = decode_in_worker(data, self.in_channels)
        if image is None:
            return Unreadable("not an image torchvision's decoders or PIL can read")
        ox, oy, flip, alphas = self._augmentation(epoch, index)
        crop_flip = torch.tensor([ox, oy, int(flip)], dtype=torch.int32)
        x = self._cut(image.permute(1, 2, 0).numpy(), ox, oy, flip)
        return DecodedImage(x, torch.from_numpy(alphas), label, crop_flip, self.mode, self.in_channels, self.crop)


# The fractional parts of index x (golden ratio - 1) spread evenly over [0, 1) for any run of consecutive
# indices (Weyl's sequence; the three-distance theorem bounds the gaps), so a share f of any stretch of the
# sample list - a validation batch - is decoded in the workers, not only of the whole list; training
# batches, drawn from a permutation, get f of their images on average.
GOLDEN_FRACTION = (math.sqrt(5.0) - 1.0) / 2.0


def decoded_in_worker(index: int, share: float) -> bool:
    """Whether FolderDataset(decode="gpu", cpu_share=share) decodes sample `index` in its worker: a function of
    the index only, so every epoch, worker count and tower pair agrees; share 0: never, 1: always."""
    return (index * GOLDEN_FRACTION) % 1.0 < share


# ---------------------------------------------------------------- order and sharding

class EpochSampler(torch.utils.data.Sampler):
    """Yields (epoch, index) for this tower pair's share of one epoch.

    Training: a permutation drawn from (seed, epoch), padded by wrapping around to a multiple of
    num_pairs (so every pair takes the same number of steps), then pair p takes positions p, p+R, ...
    Evaluation (shuffle=False): the samples in order, sharded the same way without padding.
    """

    def __init__(self, size: int, epoch: int, seed: int = 0, pair: int = 0, num_pairs: int = 1, shuffle: bool = True):
        self.size, self.epoch, self.seed, self.pair, self.num_pairs, self.shuffle = size, epoch, seed, pair, num_pairs, shuffle

    def indices(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.pair, self.size, self.num_pairs))
        order = np.random.default_rng([self.seed, self.epoch, 2**31]).permutation(self.size).tolist()
        total = math.ceil(self.size / self.num_pairs) * self.num_pairs
        order += order[: total - self.size]
        return order[self.pair::self.num_pairs]

    def __iter__(self):
        return iter([(self.epoch, i) for i in self.indices()])

    def __len__(self) -> int:
        return len(self.indices())


def make_loader(dataset: FolderDataset, sampler: EpochSampler, batch_size: int, workers: int, pin: bool = False,
                persistent: bool = False):
    """`persistent`: the worker processes start at the first pass and serve every later one (a run's epochs:
    only the sampler's epoch changes, and the workers' dataset holds no per-epoch state); stop them with
    `close_loader`. Otherwise each pass starts its own workers and stops them at its end."""
    # Own generator: the loader draws its worker seed from it, never from the global RNG (dropout's), and
    # nothing random happens in workers anyway.
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                       collate_fn=collate, pin_memory=pin, generator=torch.Generator(),
                                       persistent_workers=persistent and workers > 0,
                                       prefetch_factor=4 if workers else None)


def close_loader(loader) -> None:
    """Stop a persistent loader's worker processes now. Left to the garbage collector, they would live as
    long as anything holds the loader, an error's traceback among them; the loader starts new ones if it
    is iterated again."""
    iterator = getattr(loader, "_iterator", None)  # DataLoader keeps its persistent workers' iterator here
    if iterator is not None:
        loader._iterator = None
        try:
            iterator._shutdown_workers()
        except RuntimeError as error:
            # DataLoader's SIGCHLD check raises here when a worker, this loader's or another's, died of a signal:
            # a SIGTERM to the process group (a scheduler, torchrun) reaches the workers too. They are being
            # stopped anyway, and the error would hide why the run stopped.
            if "killed by signal" not in str(error):
                raise


class CorruptLog:
    """Counts unreadable images, logs each path once, stops past `limit` with a message."""

    def __init__(self, limit: int, log=print):
        self.limit, self.log, self.paths = limit, log, set()

    def add(self, paths: list[str], reasons: dict | None = None) -> None:
        """`reasons`: path -> why it could not be read, where known (a decompression bomb, a truncated file)."""
        for path in paths:
            if path not in self.paths:
                self.paths.add(path)
                why = f"{reasons[path]}; " if reasons and path in reasons else ""
                self.log(f"skipped unreadable image {path} ({why}{len(self.paths)} so far)")
        if len(self.paths) > self.limit:
            raise TrainError(f"{len(self.paths)} images could not be read (more than --max-corrupt {self.limit}); "
                             f"the first was {sorted(self.paths)[0]}: repair or remove them, or raise --max-corrupt.")


# ---------------------------------------------------------------- mean and the float work

def dataset_mean(root, samples, in_channels: int, max_images: int, workers: int, corrupt: CorruptLog, log=print) -> list[float]:
    """Per-channel mean of the training images (256x256, 0..255), computed once and cached in root/MEAN_FILE.

    Over all images, or an evenly spaced subset of `max_images` of them (ILSVRC: 10,000 of 1.28 M pins the
    mean to well under one grey level, at a hundredth of the decoding time).
    """
    cache = Path(root) / MEAN_FILE
    key = dict(in_channels=in_channels, images=len(samples), max_images=max_images)
    if cache.is_file():
        try:
            saved = json.loads(cache.read_text())
            if all(saved.get(k) == v for k, v in key.items()):
                return saved["mean"]
        except (OSError, ValueError, KeyError):
            pass
    step = max(1, math.ceil(len(samples) / max_images))
    subset = samples[::step]
    log(f"computing the per-channel training mean over {len(subset)} images (once; cached in {cache})")
    dataset = FolderDataset(subset, "center", in_channels, crop=RESIZE)
    sums, count = torch.zeros(in_channels, dtype=torch.float64), 0
    for batch in make_loader(dataset, EpochSampler(len(subset), 0, shuffle=False), 64, workers):
        corrupt.add(batch.corrupt, batch.reasons)
        if len(batch):
            sums += batch.images.double().mean(dim=(2, 3)).sum(0)
            count += len(batch)
    if count == 0:
        raise TrainError(f"none of the {len(subset)} training images sampled for the mean could be read: check {root}.")
    mean = (sums / count).tolist()
    try:  # temp file + rename: ranks computing it at once never read a half-written file
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(dict(key, mean=mean), indent=1))
        os.replace(tmp, cache)
    except OSError as e:
        log(f"note: could not cache the mean in {cache} ({e.strerror}); it will be computed again next time")
    return mean
