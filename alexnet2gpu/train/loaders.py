"""A run's data: its folders opened and checked once (`open_data`), and the loaders of this rank's tower pair
(`run_loaders`), built once and moved from epoch to epoch."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alexnet2gpu.data.folders import (CorruptLog, EpochSampler, FolderDataset, Splits, close_loader, dataset_mean,
                                      make_loader, open_folders)
from alexnet2gpu.data.gpu.decode import resolve_cpu_share
from alexnet2gpu.data.synthetic import ensure_synthetic
from alexnet2gpu.distributed.world import Context
from alexnet2gpu.errors import TrainError

from .checks import ONE_CLASS, check_classes
from .config import Config


@dataclass
class RunData:
    root: Path
    splits: Splits
    num_classes: int
    mean: list[float]  # per channel, subtracted from every input
    corrupt: CorruptLog  # the unreadable images met so far


def open_data(cfg: Config, corrupt: CorruptLog, say, resumed: bool = False, trained: dict | None = None,
              mean: list[float] | None = None) -> RunData:
    """The folders of --data (the built-in set without it), their classes and their mean: --mean, else `mean`
    (the one --init-from's weights were trained with), else the training images' (computed once, cached in the
    data folder where it can be written). `trained`: the checkpoint resumed or evaluated, whose classes the
    folders must have (by name, not only by count)."""
    root = cfg.data
    if root is None:
        root = ensure_synthetic(cfg.num_classes or 10, cfg.train_per_class, cfg.val_per_class, log=say)
    if resumed and not Path(root).is_dir():
        raise TrainError(f"the run's data folder {root} does not exist: if it moved, pass --data with its new "
                         "place (its classes must be the checkpoint's).")
    # A checkpoint's class count is not the user's to change: its classes are checked below, by name.
    splits = open_folders(root, None if trained else cfg.num_classes, say)
    if trained:
        check_classes(splits.classes, trained, root)
    if len(splits.classes) < 2:
        raise TrainError(f"{Path(root) / 'train'} has one class folder ({splits.classes[0]}): {ONE_CLASS}; add the "
                         "folders of the other classes (at least 2).")
    mean = cfg.mean or mean or dataset_mean(root, splits.train, cfg.in_channels, cfg.mean_images, cfg.workers, corrupt,
                                            say)
    return RunData(Path(root), splits, len(splits.classes), mean, corrupt)


@dataclass
class Loaders:
    """This rank's train and val loaders (`run_loaders`). Only the train sampler's epoch changes between
    epochs: the samplers hand (epoch, index) keys to the workers, whose datasets hold no per-epoch state."""

    train: Any  # a DataLoader, or a data.gpu.loader.DecodedLoader around one
    n_train: int  # this pair's images per epoch
    val: Any
    n_val: int
    sampler: EpochSampler  # the train loader's

    def for_epoch(self, epoch: int) -> Loaders:
        self.sampler.epoch = epoch
        return self

    def close(self) -> None:
        """Stop the worker processes (kept between epochs) now."""
        for loader in (self.train, self.val):
            close_loader(getattr(loader, "loader", loader))  # under a DecodedLoader


def run_loaders(cfg: Config, splits: Splits, ctx: Context, pin: bool = False, decode: str = "cpu",
                persistent: bool = False) -> Loaders:
    """The train and val loaders of this rank's tower pair, at epoch 1 (`Loaders.for_epoch` moves them on).
    `persistent`: each loader's workers start once and serve every epoch (train and val each keep theirs).

    Sharded by pair, never by rank: both ranks of a pair build the same batches, augmentation included.
    Pair p takes every R-th sample of the epoch's permutation, so the pairs' k-th batches of B together are
    the merged layout's k-th batch of R x B (what the gradient average over the pairs then reproduces).
    """
    share = resolve_cpu_share(cfg.cpu_decode_share, cfg.workers) if decode == "gpu" else 0.0
    train = FolderDataset(splits.train, "train", cfg.in_channels, cfg.seed, cfg.crop, decode, share)
    val = FolderDataset(splits.val, "ten" if cfg.val_crops == 10 else "center", cfg.in_channels, cfg.seed, cfg.crop,
                        decode, share)
    train_sampler = EpochSampler(len(train), 1, cfg.seed, ctx.pair, ctx.num_pairs)
    val_sampler = EpochSampler(len(val), 0, pair=ctx.pair, num_pairs=ctx.num_pairs, shuffle=False)
    val_batch = max(1, cfg.batch_size // cfg.val_crops)
    return Loaders(make_loader(train, train_sampler, cfg.batch_size, cfg.workers, pin, persistent), len(train_sampler),
                   make_loader(val, val_sampler, val_batch, cfg.workers, pin, persistent), len(val_sampler),
                   train_sampler)
