"""The built-in data set: small, deterministic, learnable, offline; real JPEG files in ImageNet's folder layout.

`python train.py` with no --data trains on it, so a new user sees a real run that learns on a CPU, and the
ILSVRC code path (folders -> decode -> resize -> crop -> flip -> PCA noise -> mean) is the one exercised.
Each class is one shape drawn in one hue (with jitter) on a noisy low-saturation background, at a random
place and size: colour alone separates the classes roughly, shape separates them fully. Every image is a
function of (class, split, index) only, so two machines generate byte-identical sets.
"""
from __future__ import annotations

import colorsys
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from alexnet2gpu.errors import TrainError

VERSION = 2  # bump when the drawing changes, so old caches are not reused
SHAPES = ("disc", "square", "triangle", "diamond", "cross", "ring", "hstripes", "vstripes", "checker", "star")
IMAGE_SIZE = 256  # already the paper's 256x256, so the resize and centre crop are no-ops


def default_cache_dir() -> Path:
    """$ALEXNET2GPU_CACHE, else $XDG_CACHE_HOME/alexnet2gpu, else ~/.cache/alexnet2gpu."""
    if os.environ.get("ALEXNET2GPU_CACHE"):
        return Path(os.environ["ALEXNET2GPU_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "alexnet2gpu"


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, angle: float, fill) -> None:
    def polygon(points: int, radii: tuple[float, ...]) -> list[tuple[float, float]]:
        out = []
        for i in range(points * len(radii)):
            a = angle + 2 * math.pi * i / (points * len(radii))
            rr = r * radii[i % len(radii)]
            out.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        return out

    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "disc":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.polygon(polygon(4, (1.0,)), fill=fill)
    elif shape == "triangle":
        draw.polygon(polygon(3, (1.0,)), fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + 0.6 * r, cy), (cx, cy + r), (cx - 0.6 * r, cy)], fill=fill)
    elif shape == "cross":
        w = r / 3
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
    elif shape == "ring":
        draw.ellipse(box, outline=fill, width=max(3, int(r / 3)))
    elif shape in ("hstripes", "vstripes"):
        step = max(6, int(r / 3))
        for k in range(-3, 4, 2):
            o = k * step / 2
            if shape == "hstripes":
                draw.rectangle((cx - r, cy + o - step / 4, cx + r, cy + o + step / 4), fill=fill)
            else:
                draw.rectangle((cx + o - step / 4, cy - r, cx + o + step / 4, cy + r), fill=fill)
    elif shape == "checker":
        cell = 2 * r / 4
        for i in range(4):
            for j in range(4):
                if (i + j) % 2 == 0:
                    x0, y0 = cx - r + i * cell, cy - r + j * cell
                    draw.rectangle((x0, y0, x0 + cell, y0 + cell), fill=fill)
    elif shape == "star":
        draw.polygon(polygon(5, (1.0, 0.45)), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def make_image(label: int, num_classes: int, split: str, index: int) -> Image.Image:
    """One 256x256 RGB image of class `label`: a pure function of its arguments."""
    rng = np.random.default_rng([VERSION, label, num_classes, 0 if split == "train" else 1, index])
    # background: a low-saturation colour with a gentle gradient and pixel noise
    base = np.array(colorsys.hsv_to_rgb(rng.random(), 0.25 * rng.random(), 0.3 + 0.5 * rng.random())) * 255
    ramp = np.linspace(-1, 1, IMAGE_SIZE)[:, None, None] * rng.normal(0, 20, size=3)
    noise = rng.normal(0, 12, size=(IMAGE_SIZE, IMAGE_SIZE, 3))
    pixels = np.clip(base + ramp + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    # the object: class hue (+-0.03 jitter), saturated, at a random place, size and angle
    hue = (label / num_classes + rng.uniform(-0.03, 0.03)) % 1.0
    fill = tuple(int(c * 255) for c in colorsys.hsv_to_rgb(hue, rng.uniform(0.7, 1.0), rng.uniform(0.75, 1.0)))
    r = rng.uniform(70, 105)
    cx, cy = rng.uniform(r + 10, IMAGE_SIZE - r - 10, size=2)
    _draw_shape(ImageDraw.Draw(image), SHAPES[label % len(SHAPES)], cx, cy, r, rng.uniform(0, 2 * math.pi), fill)
    return image


def dataset_dir(num_classes: int, train_per_class: int, val_per_class: int, cache_dir=None) -> Path:
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / f"synthetic-v{VERSION}-c{num_classes}-t{train_per_class}-v{val_per_class}"


def ensure_synthetic(num_classes: int = 10, train_per_class: int = 40, val_per_class: int = 10,
                     cache_dir=None, log=print) -> Path:
    """Return the folder of the built-in set (train/ and val/ of class folders), generating it once.

    The set is written to a temporary folder and renamed into place, so an interrupted generation is never
    mistaken for a finished one.
    """
    if not 1 <= num_classes <= len(SHAPES):
        raise ValueError(f"the built-in data set has 1 to {len(SHAPES)} classes, not {num_classes}: "
                         f"pass --num-classes {len(SHAPES)} or less, or give --data DIR.")
    final = dataset_dir(num_classes, train_per_class, val_per_class, cache_dir)
    if (final / "val").is_dir():
        return final
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=final.name + ".tmp-", dir=final.parent))
    except OSError as e:
        raise TrainError(f"cannot write the built-in data set to {final.parent} ({e.strerror or e}): set "
                         "ALEXNET2GPU_CACHE to a folder you can write to, or pass --data DIR.") from None
    log(f"generating the built-in data set in {final} (once; later runs reuse it)")
    try:
        for split, per_class in (("train", train_per_class), ("val", val_per_class)):
            for label in range(num_classes):
                folder = tmp / split / f"{label:02d}_{SHAPES[label]}"
                folder.mkdir(parents=True)
                for i in range(per_class):
                    make_image(label, num_classes, split, i).save(folder / f"{split}_{label:02d}_{i:05d}.jpg", quality=90)
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished first
            if not (final / "val").is_dir():
                raise
    except OSError as e:  # a full disk
        raise TrainError(f"cannot write the built-in data set to {final.parent} ({e.strerror or e}): free space there, "
                         "set ALEXNET2GPU_CACHE to another folder, or pass --data DIR.") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
