"""What a run is given, checked before it trains: its numbers and names, and its data against a checkpoint.

One sentence per mistake, naming the flag and what it accepts: a NaN learning rate would otherwise train
to NaN weights, a momentum of 1 or more never forgets a gradient, a negative --keep deletes the wrong
checkpoints, a run name with a slash writes outside --out, and a checkpoint scored on other classes gives
a meaningless error.
"""
from __future__ import annotations

import math
from pathlib import Path

from alexnet2gpu.data.folders import PCA_NOISE
from alexnet2gpu.data.gpu.decode import resolve_cpu_share
from alexnet2gpu.errors import TrainError
from alexnet2gpu.model.layers import CROPS

ONE_CLASS = "a softmax over one class gives it probability 1 whatever the weights, so the network learns nothing"
MAX_SEED = 2**32 - 1  # NumPy's legacy seed range (dist.seed_all seeds every generator alike)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _number(cfg, name: str, low: float, high: float = math.inf, low_open: bool = False, high_open: bool = False,
            whole: bool = False, optional: bool = False) -> None:
    value = getattr(cfg, name)
    if value is None and optional:
        return
    kind = "a whole number" if whole else "a number"
    ok = isinstance(value, int) if whole else isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and not whole:
        ok = math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        lo = f"{'above' if low_open else 'at least'} {low:g}"
        hi = "" if high == math.inf else f" and {'below' if high_open else 'at most'} {high:.12g}"
        raise TrainError(f"{flag(name)} must be {kind} {lo}{hi}, got {value!r}.")


def check_values(cfg) -> None:
    """Every numeric setting of a trainer.Config, and the run name."""
    _number(cfg, "lr", 0, low_open=True)
    _number(cfg, "momentum", 0, 1, high_open=True)
    _number(cfg, "weight_decay", 0)
    _number(cfg, "dropout", 0, 1, high_open=True)
    _number(cfg, "seed", 0, MAX_SEED, whole=True)
    _number(cfg, "workers", 0, whole=True)
    _number(cfg, "patience", 0, whole=True)
    _number(cfg, "max_steps", 1, whole=True, optional=True)
    _number(cfg, "log_every", 0, whole=True, optional=True)
    _number(cfg, "mean_images", 1, whole=True)
    _number(cfg, "max_corrupt", 0, whole=True)
    _number(cfg, "keep", 1, whole=True)
    _number(cfg, "dist_timeout", 0, low_open=True)
    _number(cfg, "train_per_class", 0, whole=True)
    _number(cfg, "val_per_class", 0, whole=True)
    resolve_cpu_share(cfg.cpu_decode_share, cfg.workers)  # "auto" or a fraction, whatever --decode says
    bad_steps = [s for s in cfg.lr_steps or [] if not isinstance(s, int) or s < 1]
    if bad_steps:
        raise TrainError(f"--lr-steps are epochs after which the lr drops, whole numbers of at least 1; got {bad_steps}.")
    if cfg.mean is not None and not all(isinstance(m, (int, float)) and math.isfinite(m) for m in cfg.mean):
        raise TrainError(f"--mean needs finite numbers on the 0..255 scale, got {cfg.mean}.")
    if cfg.mean is not None and not all(0 <= m <= 255 for m in cfg.mean):  # pixels are 0..255, so is their mean
        raise TrainError(f"--mean needs numbers on the 0..255 scale, got {cfg.mean}: pass the per-channel mean of "
                         "the images' pixel values, or leave --mean out to compute it.")
    name = cfg.run_name
    if name is not None and (not name or name in (".", "..") or "/" in name or "\\" in name):
        raise TrainError(f"--run-name {name!r} must be a plain folder name (no '/', not '.' or '..'): the run "
                         "folder is created inside --out.")


def check_config(cfg) -> None:
    """Every setting of a trainer.Config that a run's set-up reads before it opens the data."""
    for name in ("epochs", "batch_size", "in_channels", "crop"):
        if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) < 1:
            raise TrainError(f"--{name.replace('_', '-')} must be a whole number of at least 1, got {getattr(cfg, name)!r}.")
    if cfg.num_classes is not None and cfg.num_classes < 2:
        raise TrainError(f"--num-classes must be at least 2 ({ONE_CLASS}), got {cfg.num_classes}.")
    if cfg.in_channels not in (1, 3):
        raise TrainError(f"--in-channels {cfg.in_channels}: image folders give 1 (grey) or 3 (RGB) channels; pass 1 or 3.")
    if cfg.pca not in ("none", *PCA_NOISE):
        raise TrainError(f"--pca {cfg.pca!r}: choose paper, original or none.")
    if cfg.pca != "none" and cfg.in_channels != 3:
        raise TrainError("PCA colour noise needs RGB input: pass --pca none with --in-channels 1.")
    if cfg.crop not in CROPS:
        raise TrainError(f"--crop {cfg.crop}: AlexNet takes 224 (paper) or 227 (caffe) crops.")
    check_values(cfg)
    if cfg.mean is not None and len(cfg.mean) != cfg.in_channels:
        raise TrainError(f"--mean needs {cfg.in_channels} comma-separated values (one per channel), got {cfg.mean}.")


def same_folder(a, b) -> bool:
    return a is not None and b is not None and Path(a).resolve() == Path(b).resolve()


def check_classes(classes: list[str], state: dict, root) -> None:
    """The checkpoint's outputs mean its classes, in its order: a data set with other class folders would
    train or score them as if they were the same."""
    saved = state.get("classes")
    if saved is None:  # weights without class names: their number of outputs, at least
        count = state.get("num_classes")
        if count is not None and count != len(classes):
            raise TrainError(f"{root} has {len(classes)} class folders and checkpoint {state['path']} has {count} "
                             f"outputs: pass --data with the {count} classes the checkpoint was trained on.")
        return
    if list(saved) == list(classes):
        return
    only_here = sorted(set(classes) - set(saved))[:3]
    only_saved = sorted(set(saved) - set(classes))[:3]
    raise TrainError(f"{root} has other classes than checkpoint {state['path']} ({len(classes)} vs {len(saved)}; "
                     f"only here: {only_here or 'none'}, only in the checkpoint: {only_saved or 'none'}): pass --data "
                     "with the classes the checkpoint was trained on.")
