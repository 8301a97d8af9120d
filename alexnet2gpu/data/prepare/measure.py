"""The measurements behind prepare's defaults (docs/prepare.md), on generated photo-like images.

    python -m alexnet2gpu.data.prepare.measure                  # quality table, decode costs, images/s
    python -m alexnet2gpu.data.prepare.measure --images 200 --workers 2 --qualities 75,85,90,95,100

Quality: each source is brought to 256x256 exactly as prepare does (kept uncompressed as the reference),
then JPEG-encoded at each quality; reported are the mean file size and the PSNR of the decoded file
against the reference over the 3 channels. Speed: prepare() itself on a folder of `--images` sources.
"""
from __future__ import annotations

import argparse
import io
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..imaging import resize_center, to_rgb
from .prepare import decode_256, prepare

SOURCE_QUALITY = 92  # camera and Flickr JPEGs are mostly saved at 85..95


def photo_like(seed: int, width: int = 500, height: int = 375) -> Image.Image:
    """A deterministic RGB image with a photograph's statistics: amplitude falling as 1/frequency^1.2
    (brightness; smoother still for colour, as in photos), a few hard-edged shaded objects, mild noise."""
    rng = np.random.default_rng(seed)
    fy, fx = np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :]
    frequency = np.maximum(np.hypot(fx, fy), 1.0 / max(width, height))

    def field(exponent: float) -> np.ndarray:
        phase = rng.uniform(0, 2 * np.pi, frequency.shape)
        f = np.fft.irfft2(frequency ** -exponent * np.exp(1j * phase), s=(height, width))
        return (f - f.mean()) / f.std()

    luma, chroma_a, chroma_b = field(1.2), field(1.8), field(1.8)
    tint = rng.normal(0, 25, 3)
    rgb = 115 + tint + 45 * luma[..., None] + 20 * np.stack([chroma_a, -0.5 * chroma_a + chroma_b, -chroma_b], -1)
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    shade = (np.linspace(0.7, 1.2, width)[None, :, None] * np.ones((height, 1, 1)))
    shaded = Image.fromarray(np.clip(np.asarray(image, np.float32) * shade, 0, 255).astype(np.uint8))
    for _ in range(rng.integers(2, 6)):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.05, 0.3) * min(width, height)
        mask = Image.new("L", (width, height))
        ImageDraw.Draw(mask).ellipse((x - r, y - r * rng.uniform(0.4, 1), x + r, y + r), fill=255)
        colour = Image.new("RGB", (width, height), tuple(int(c) for c in rng.integers(0, 256, 3)))
        image = Image.composite(Image.blend(colour, shaded, 0.35), image, mask)  # an object with texture
    noisy = np.asarray(image, np.float32) + rng.normal(0, 2.0, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def write_sources(folder: Path, count: int, width: int, height: int, classes: int = 4) -> None:
    """folder/train/c<k>/img_<i>.JPEG: `count` photo-like JPEGs at SOURCE_QUALITY."""
    for i in range(count):
        target = folder / "train" / f"c{i % classes}"
        target.mkdir(parents=True, exist_ok=True)
        photo_like(i, width, height).save(target / f"img_{i:05d}.JPEG", quality=SOURCE_QUALITY)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def quality_table(sources: list[Path], qualities: list[int]) -> list[dict]:
    references = [np.asarray(decode_256(str(p))) for p in sources]
    rows = []
    for q in qualities:
        sizes, scores, seconds = [], [], 0.0
        for ref in references:
            buffer = io.BytesIO()
            Image.fromarray(ref).save(buffer, "JPEG", quality=q)
            sizes.append(buffer.tell())
            start = time.perf_counter()
            decoded = np.asarray(Image.open(buffer).convert("RGB"))  # what training pays per image
            seconds += time.perf_counter() - start
            scores.append(psnr(ref, decoded))
        rows.append(dict(quality=q, kib=np.mean(sizes) / 1024, psnr=np.mean(scores), psnr_min=min(scores),
                         decode_ms=seconds / len(references) * 1000))
    return rows


def source_psnr(count: int, width: int, height: int) -> float:
    """The error already in the sources: PSNR of a SOURCE_QUALITY JPEG against the image it was made from."""
    scores = []
    for i in range(count):
        image, buffer = photo_like(i, width, height), io.BytesIO()
        image.save(buffer, "JPEG", quality=SOURCE_QUALITY)
        scores.append(psnr(np.asarray(image), np.asarray(Image.open(buffer).convert("RGB"))))
    return float(np.mean(scores))


def decode_ms(path: Path, draft: bool, repeats: int = 20) -> float:
    """Milliseconds to bring one source to 256x256, with or without JPEG draft decoding."""
    start = time.perf_counter()
    for _ in range(repeats):
        with Image.open(path) as im:
            if draft:
                im.draft("RGB", (256, 256))
            resize_center(to_rgb(im)).load()
    return (time.perf_counter() - start) / repeats * 1000


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the pool's workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=200, help="sources for the speed run (default 200)")
    p.add_argument("--size", default="500x375", help="source size for the speed run (ILSVRC's typical 500x375)")
    p.add_argument("--workers", type=int, default=None, help="prepare's workers (default: every usable core)")
    p.add_argument("--qualities", default="75,85,90,95,100", help="JPEG qualities for the table")
    args = p.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    workers = args.workers or len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_sources(root / "src", args.images, width, height)
        sources = sorted((root / "src").rglob("*.JPEG"))
        print(f"{os.cpu_count()} CPUs, {len(os.sched_getaffinity(0))} usable; {len(sources)} sources {args.size}")
        print("quality  KiB/image  PSNR dB (mean)  PSNR dB (worst)  decode ms")
        for r in quality_table(sources[:50], [int(q) for q in args.qualities.split(",")]):
            print(f"{r['quality']:7d}  {r['kib']:9.1f}  {r['psnr']:14.2f}  {r['psnr_min']:15.2f}  "
                  f"{r['decode_ms']:9.2f}")
        print(f"the sources themselves (quality {SOURCE_QUALITY}, full size): "
              f"{source_psnr(20, width, height):.2f} dB against their originals")
        for w, h in ((width, height), (2 * width, 2 * height)):
            big = root / f"one_{w}x{h}.JPEG"
            photo_like(0, w, h).save(big, quality=SOURCE_QUALITY)
            print(f"{w}x{h} source to 256x256: {decode_ms(big, True):.1f} ms with draft, "
                  f"{decode_ms(big, False):.1f} ms without")
        start, cpu_start = time.perf_counter(), cpu_seconds()
        marker = prepare(root / "src", root / "dst", workers=workers, log=lambda line: None)
        seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu_start
        done = marker["splits"]["train"]["written"]
        print(f"prepare: {done} images in {seconds:.2f} s with {workers} workers: {done / seconds:.0f} images/s, "
              f"{done / seconds / workers:.0f} per worker (includes start-up and the final sync)")
        print(f"CPU time: {cpu / done * 1000:.1f} ms per image (all processes), so {done / cpu:.0f} images/s "
              "per core that prepare has to itself")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
