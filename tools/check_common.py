"""What the GPU data-path checks (gpu_decode_check.py) and e2e_check.py share: the
photo-like JPEGs they write, the odd files, their options, how a failure is reported and where results go."""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = 8
ODD_FILES = ("progressive.jpg", "cmyk.jpg", "grey.jpg", "photo.png", "wide-500x300.jpg", "garbage.jpg")


class CheckFailed(Exception):
    pass


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def photo_like(seed: int, width: int = 256, height: int = 256) -> Image.Image:
    """A smooth random colour field with detail at two scales plus sensor-like noise: compresses like a photo
    (flat colours would flatter any decoder)."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    fine = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    pixels = 0.75 * np.asarray(coarse, np.float32) + 0.25 * np.asarray(fine, np.float32)
    pixels += rng.normal(0, 6, (height, width, 3)).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _write_one(job: tuple[str, int]) -> None:
    path, seed = job
    photo_like(seed).save(path, quality=90)


def generate(root: Path, images: int, val_per_class: int = 1, distinct: int | None = None, writer=_write_one) -> None:
    """root/train/cK/*.jpg (images in all) and val_per_class images per class in root/val, written by `writer`
    in parallel. Training files past the first `distinct` are hard links to those, so the callers' loaders
    still read and decode every file."""
    jobs, links = [], []
    for split, count in (("train", images), ("val", val_per_class * CLASSES)):
        for k in range(CLASSES):
            (root / split / f"c{k}").mkdir(parents=True)
        for i in range(count):
            path = root / split / f"c{i % CLASSES}" / f"{i:06d}.jpg"
            if split == "train" and distinct is not None and i >= distinct:
                links.append((path, root / split / f"c{i % distinct % CLASSES}" / f"{i % distinct:06d}.jpg"))
            else:
                jobs.append((str(path), i + (10**6 if split == "val" else 0)))
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    with multiprocessing.get_context(method).Pool(min(16, os.cpu_count() or 1)) as pool:
        pool.map(writer, jobs, chunksize=16)
    for path, target in links:
        os.link(target, path)


def link_copies(root: Path, copies: int) -> int:
    """Link every training file `copies` times more under new names, so the pipeline measurements see many
    more batches than there are workers (reads come from the page cache either way; decoding is real work)."""
    files = sorted((root / "train").rglob("*.jpg"))
    for c in range(1, copies):
        for f in files:
            os.symlink(f, f.with_name(f"{f.stem}-copy{c}.jpg"))
    return len(files) * copies


def write_odd_files(folder: Path) -> None:
    """Files nvJPEG may refuse, and one no decoder reads."""
    folder.mkdir(parents=True)
    photo_like(1).save(folder / "progressive.jpg", quality=90, progressive=True)
    photo_like(2).convert("CMYK").save(folder / "cmyk.jpg", quality=90)
    photo_like(3).convert("L").save(folder / "grey.jpg", quality=90)
    photo_like(4).save(folder / "photo.png")
    photo_like(5, 500, 300).save(folder / "wide-500x300.jpg", quality=90)
    (folder / "garbage.jpg").write_bytes(b"\xff\xd8\xff this is no image")


def write_test_files(tmp: Path, images: int) -> tuple[Path, list, list]:
    """(the data folder, its training samples, their bytes as uint8 tensors): `images` photo-like JPEGs written
    into class folders under `tmp`, and the odd files in tmp/odd."""
    import torch

    from alexnet2gpu.data.folders import open_folders
    root = tmp / "data"
    say(f"writing {images} photo-like 256x256 JPEGs (quality 90) in {root}")
    generate(root, images)
    write_odd_files(tmp / "odd")
    samples = open_folders(root, None).train
    return root, samples, [torch.from_numpy(np.fromfile(p, dtype=np.uint8)) for p, _ in samples]


def copies_for_pipeline(root: Path, samples: list, workers: int, batch: int) -> tuple[int, int, int]:
    """(copies, samples, batches): the training files linked enough times for 4 batches a worker, so the
    pipeline measurements see many more batches than there are workers."""
    copies = max(1, -(-4 * max(1, workers) * batch // len(samples)))
    total = link_copies(root, copies)
    if total // batch < 2:
        raise CheckFailed(f"{total} images make fewer than 2 batches of {batch}: pass more --images.")
    return copies, total, total // batch


# ---------------------------------------------------------------- measurements

def save(out: str, name: str, table: str, figures: dict) -> str:
    """The table as OUT/NAME.txt and the figures as OUT/NAME.json; returns the table."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.txt").write_text(table + "\n")
    (folder / f"{name}.json").write_text(json.dumps(figures, indent=1))
    return table


def check_options(doc: str, out: str, timed: str) -> argparse.ArgumentParser:
    """The options the data-path checks share (gpu_decode_check.py); `timed`: the measurements
    --repeats applies to."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--out", default=out, help="folder for the table and figures (default %(default)s)")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for the CPU-safe parts")
    p.add_argument("--images", type=int, default=2048, help="distinct JPEGs to write (default %(default)s)")
    p.add_argument("--batch", type=int, default=256, help="batch size (default %(default)s)")
    p.add_argument("--workers", type=int, default=None, help="loader processes (default: train.py's)")
    p.add_argument("--repeats", type=int, default=3, help=f"timed passes over the images for {timed}")
    return p


def run_check(name: str, check, args) -> int:
    """Print check(args, start)'s table; a failure is one line on stderr (with the details after it when it is
    no CheckFailed or one-sentence TrainError) and exit status 1."""
    from alexnet2gpu.errors import TrainError
    start = time.perf_counter()
    try:
        if args.images < CLASSES or args.batch < 1:
            raise CheckFailed(f"--images must be at least {CLASSES} and --batch at least 1.")
        print(check(args, start), flush=True)
    except (CheckFailed, TrainError) as e:  # TrainError: e.g. a missing extra, named in its sentence
        print(f"{name}: FAILED: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # anything else is a failure of the check too: one line, then the details
        print(f"{name}: FAILED with {type(e).__name__}: {e}", file=sys.stderr)
        import traceback
        traceback.print_exc()
        return 1
    say(f"done in {time.perf_counter() - start:.0f} s")
    return 0
