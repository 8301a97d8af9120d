"""Check the GPU data path on a CUDA machine: how fast nvJPEG and decode_images are (by call size, from two
threads, and from two processes at once: whether decoding in more than one process would pay), what the input
pipeline delivers with --decode cpu and with --decode gpu at several CPU shares (--cpu-decode-share: which one
feeds most sets gpu_decode's rate constants), and that the paths cut the same crops.

    PYTHONPATH=. python3 tools/gpu_decode_check.py --out DIR
    PYTHONPATH=. python3 tools/gpu_decode_check.py --device cpu --images 64 --out DIR   # the CPU-safe parts

It writes --images photo-like 256x256 JPEGs (quality 90) into class folders in a temporary folder, prints one
table on stdout (also saved with the figures as DIR/gpu_decode_check.txt and .json), progress on stderr, and
exits with status 1 and one line on stderr when a check fails. About a minute on a 16-core GPU machine: the
shares past 0 and auto are measured only while --budget seconds allow (the table says which were skipped).
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from decode_processes import in_processes  # a sibling in tools/
from PIL import Image

CLASSES = 8
# Mean grey levels two JPEG decoders may differ by on the same file: nvJPEG upsamples chroma and rounds its
# inverse DCT unlike libjpeg (PIL), 1.7 on these images on an H100 with torchvision 0.26. A wrong crop window
# or flip differs by tens.
DECODER_LIMIT = 4.0
ODD_FILES = ("progressive.jpg", "cmyk.jpg", "grey.jpg", "photo.png", "wide-500x300.jpg", "garbage.jpg")
SHARES = "0,auto,0.3,0.45,0.6"  # --cpu-decode-share values the input pipeline is measured at, in this order
MIXED_SHARE = 0.5  # the share of the mixed batches compared with the CPU path
CALL_SIZES = (64, 128, 512)  # images per decode call beside --batch: what a call costs beyond its images


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
    from alexnet2gpu.data import open_folders
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

def batches_of(samples, batch: int, mode: str = "train", decode: str = "gpu", epoch: int = 0, cpu_share: float = 0.0):
    """Collated loader batches of `samples` in order, built here (no workers)."""
    from alexnet2gpu.data import FolderDataset, collate
    dataset = FolderDataset(samples, mode, decode=decode, cpu_share=cpu_share)
    return [collate([dataset[(epoch, i)] for i in range(s, min(s + batch, len(samples)))])
            for s in range(0, len(samples), batch)]


def rate(work, items: int, device, repeats: int) -> float:
    """Images per second of work() over `repeats` runs after one warm-up run."""
    import torch
    work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return items * repeats / (time.perf_counter() - start)


def in_threads(items, work, threads: int) -> None:
    """work(item) for every item, spread over `threads` threads: whether decode calls overlap (torchvision's
    nvJPEG decoder takes one call at a time per process)."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, items))


def crop_maths_difference(batch, device) -> int:
    """decode_images' crops against data.py's own slicing of the same decoded pixels: 0 when the device's
    indexing cuts exactly the CPU path's windows and flips."""
    import torch
    from alexnet2gpu import gpu_decode
    full = torch.stack([gpu_decode.to_256(im) for im in gpu_decode.decode_files(batch.files(), device, 3)])
    on_device = gpu_decode.crop_batch(full, batch.crop_flip, "train", 224).cpu()
    worst = 0
    for n, (ox, oy, flip) in enumerate(batch.crop_flip.tolist()):
        a = full[n].permute(1, 2, 0).cpu().numpy()[oy:oy + 224, ox:ox + 224]  # FolderDataset's train crop
        a = a[:, ::-1] if flip else a
        reference = torch.from_numpy(a.copy()).permute(2, 0, 1)
        worst = max(worst, int((on_device[n].int() - reference.int()).abs().max()))
    return worst


def path_differences(samples, batch: int, device, shares=(0.0,), decoder="torchvision") -> list[tuple[int, float]]:
    """For each CPU share, the max and mean absolute pixel difference between decode="gpu" crops on `device`
    (that share of them decoded here, as in a loader worker; the rest by `decoder`) and decode="cpu" crops."""
    from alexnet2gpu.gpu_decode import decode_images
    reference = batches_of(samples, batch, decode="cpu")
    results = []
    for share in shares:
        worst, total, count = 0, 0.0, 0
        for gpu, cpu in zip(batches_of(samples, batch, cpu_share=share), reference):
            images, corrupt, _ = decode_images(gpu, device, 3, "train", 224, decoder)
            if corrupt or images.shape != cpu.images.shape:
                raise CheckFailed(f"decode=gpu gave {tuple(images.shape)} with {len(corrupt)} dropped where decode=cpu "
                                  f"gave {tuple(cpu.images.shape)}: the GPU path loses images.")
            diff = (images.cpu().int() - cpu.images.int()).abs()
            worst, total, count = max(worst, int(diff.max())), total + float(diff.float().sum()), count + diff.numel()
        results.append((worst, total / count))
    return results


def odd_files_report(folder: Path, device, decoder="torchvision") -> str:
    """Each odd file through decode_images on `device` with `decoder` against the CPU path: kept or dropped,
    and the mean pixel difference (the decoder's refusals go through the CPU fallback)."""
    from alexnet2gpu.gpu_decode import decode_images
    samples = [(str(folder / name), 0) for name in ODD_FILES]
    gpu = batches_of(samples, len(samples), mode="center")[0]
    cpu = batches_of(samples, len(samples), mode="center", decode="cpu")[0]
    images, corrupt, kept = decode_images(gpu, device, 3, "center", 224, decoder)
    if corrupt != [str(folder / "garbage.jpg")]:
        raise CheckFailed(f"the odd files dropped were {corrupt}, not just garbage.jpg: a fallback failed.")
    parts = []
    for row, index in enumerate(kept):
        diff = (images[row].cpu().float() - cpu.images[row].float()).abs().mean()
        limit = DECODER_LIMIT + (1.0 if "wide" in ODD_FILES[index] else 0.0)  # resized: bilinear vs PIL's draft
        if diff > limit:
            raise CheckFailed(f"{ODD_FILES[index]} differs from the CPU path by {diff:.2f} grey levels on average: "
                              "its fallback decodes it wrongly.")
        parts.append(f"{ODD_FILES[index]} {diff:.2f}")
    return "; ".join(parts) + "; garbage.jpg dropped"


def pipeline_rate(root: Path, batch: int, device, decode: str, workers: int, batches: int,
                  cpu_share="auto", decoder="torchvision") -> tuple[float, float, float]:
    """(images/s, the CPU share used, wall seconds of the whole measurement with the workers' start)."""
    from alexnet2gpu.bench.pipeline import measure_input_pipeline
    start = time.perf_counter()
    r = measure_input_pipeline(batch, device, str(root), workers, max_batches=batches - 1, log=say, decode=decode,
                               cpu_share=cpu_share, decoder=decoder)
    return batch / r["seconds_per_batch"], r["cpu_share"], time.perf_counter() - start


def parse_shares(text: str) -> list:
    """--shares: comma-separated --cpu-decode-share values; 0 comes first whether listed or not (the all-GPU
    baseline)."""
    from alexnet2gpu.errors import TrainError
    from alexnet2gpu.gpu_decode import resolve_cpu_share
    shares = []
    for item in (v.strip() for v in text.split(",") if v.strip()):
        try:
            value = item if item == "auto" else resolve_cpu_share(item, 1)
        except TrainError:
            raise CheckFailed(f"--shares takes auto and numbers from 0 to 1, got {item!r}.") from None
        if value not in shares:
            shares.append(value)
    return [0.0] + [v for v in shares if v != 0.0]


def share_sweep(root: Path, batch: int, device, workers: int, batches: int, shares: list, deadline: float = math.inf,
                last: float = 0.0, decoder="torchvision") -> list:
    """The input pipeline with --decode gpu at each share: [(share as given, share used, images/s, wall
    seconds)]. A share runs only while a run as long as the last one (`last` seconds before the first) still
    ends before `deadline` (time.perf_counter()); a skipped one is (share, None, None, 0)."""
    results = []
    for share in shares:
        if time.perf_counter() + last > deadline:
            results.append((share, None, None, 0.0))
            continue
        say(f"(c) input pipeline, decode=gpu with {decoder}, --cpu-decode-share {share}, {workers} workers, "
            f"{batches} batches")
        value, used, last = pipeline_rate(root, batch, device, "gpu", workers, batches, share, decoder)
        results.append((share, used, value, last))
    return results


# ---------------------------------------------------------------- the check

def check(args, started: float) -> str:
    import torch
    from alexnet2gpu.data import default_workers
    from alexnet2gpu.gpu_decode import decode_images, decode_on_device

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CheckFailed("no CUDA device here: run it on a GPU machine, or pass --device cpu for the CPU-safe parts.")
    workers = default_workers() if args.workers is None else args.workers
    shares = parse_shares(args.shares)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "the CPU"
    import torchvision
    with tempfile.TemporaryDirectory(prefix="gpu-decode-check-") as tmp:
        root, samples, files = write_test_files(Path(tmp), args.images)
        size_kb = sum(len(f) for f in files) / len(files) / 1024
        chunks = [files[s:s + args.batch] for s in range(0, len(files), args.batch)]
        decoder = "nvJPEG" if device.type == "cuda" else "libjpeg"

        say(f"(a) {decoder} batch decode alone; by images a call; from two threads")
        decode_rate = rate(lambda: [decode_on_device(c, device, 3) for c in chunks], len(files), device, args.repeats)
        call_rates = [(size, rate(lambda: [decode_on_device(files[s:s + size], device, 3)
                                           for s in range(0, len(files) - size + 1, size)],
                                  len(files) // size * size, device, args.repeats))
                      for size in CALL_SIZES if size != args.batch and size <= len(files)]
        two_threads = rate(lambda: in_threads(chunks, lambda c: decode_on_device(c, device, 3), 2), len(files),
                           device, args.repeats)
        say(f"(a) {decoder} batch decode alone in two processes at once (each starts torch first)")
        two_processes = in_processes([p for p, _ in samples], args.batch, str(device), 2, args.repeats)
        say("(b) decode_images: decode, crop, flip")
        batches = batches_of(samples, args.batch)
        crop_rate = rate(lambda: [decode_images(b, device, 3, "train", 224) for b in batches], len(files), device,
                         args.repeats)
        say("checking the crop maths and the two paths' pixels")
        maths = crop_maths_difference(batches[0], device)
        if maths:
            raise CheckFailed(f"the device's crops differ from data.py's slicing of the same pixels by up to {maths}: "
                              "crop_windows cuts the wrong windows.")
        (worst, mean), (mixed_worst, mixed_mean) = path_differences(samples[:4 * args.batch], args.batch, device,
                                                                    (0.0, MIXED_SHARE))
        for share, m in ((0, mean), (MIXED_SHARE, mixed_mean)):
            if m > DECODER_LIMIT:  # a wrong window, flip or batch position differs by tens of grey levels here
                raise CheckFailed(f"decode=gpu (CPU share {share}) and decode=cpu crops differ by {m:.2f} grey "
                                  "levels on average: the GPU path does not cut the CPU path's crops.")
        odd = odd_files_report(Path(tmp) / "odd", device)

        copies, total, batches_total = copies_for_pipeline(root, samples, workers, args.batch)
        sweep = share_sweep(root, args.batch, device, workers, batches_total, shares[:2])  # 0 and the next: always
        say(f"(d) input pipeline, decode=cpu, {workers} workers, {batches_total} batches")
        cpu_rate = pipeline_rate(root, args.batch, device, "cpu", workers, batches_total)[0]
        sweep += share_sweep(root, args.batch, device, workers, batches_total, shares[2:], started + args.budget,
                             max(r[3] for r in sweep))

    rows = [(f"(a) {decoder} batch decode alone", decode_rate)]
    rows += [(f"(a) {decoder} batch decode alone, {size} images a call", value) for size, value in call_rates]
    rows += [(f"(a) {decoder} batch decode alone, two threads", two_threads),
             (f"(a) {decoder} batch decode alone, two processes together", two_processes),
            ("(b) decode_images: decode + crop + flip", crop_rate)]
    rows += [(f"(c) input pipeline, decode=gpu, share {share_text(given, used)}, {workers} workers", value)
             for given, used, value, _ in sweep]
    rows += [(f"(d) input pipeline, decode=cpu, {workers} workers", cpu_rate)]
    best = max((r for r in sweep if r[2] is not None), key=lambda r: r[2])
    lines = [f"GPU data path on {name} (torch {torch.__version__}, torchvision {torchvision.__version__}, "
             f"{len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()} cores): "
             f"{len(samples)} JPEGs 256x256 q90 ({size_kb:.0f} KB each), batch {args.batch}, 224 crops",
             f"  {'measurement':60s} {'images/s':>10s}"]
    lines += [f"  {label:60s} {'skipped (--budget)' if value is None else f'{value:10,.0f}':>10s}" for label, value in rows]
    lines += [f"  (c), (d): {total} samples ({copies} links to each file), {batches_total - 1} batches timed; "
              f"fastest share {best[1]:.2f}",
              f"  crop maths, device vs data.py slicing of the same pixels: max abs pixel difference {maths}",
              f"  decode=gpu vs decode=cpu crops ({decoder} vs PIL): max abs pixel difference {worst}, mean {mean:.3f}",
              f"  the same with CPU share {MIXED_SHARE} (libjpeg in the workers): max {mixed_worst}, mean {mixed_mean:.3f}",
              f"  fallbacks (mean abs difference to the CPU path): {odd}"]
    return save(args.out, "gpu_decode_check", "\n".join(lines), dict(
        device=name, torch=torch.__version__, torchvision=torchvision.__version__, images=len(samples),
        batch=args.batch, workers=workers, kb_per_image=size_kb, rates={label: value for label, value in rows},
        crop_maths_max_difference=maths, path_max_difference=worst, path_mean_difference=mean,
        mixed_share=MIXED_SHARE, mixed_max_difference=mixed_worst, mixed_mean_difference=mixed_mean, fallbacks=odd,
        shares=[dict(given=given, used=used, images_per_s=value, wall_seconds=seconds)
                for given, used, value, seconds in sweep]))


def share_text(given, used) -> str:
    if used is None:
        return str(given)
    return f"{used:.2f}" + (" (auto)" if given == "auto" else "")


def save(out: str, name: str, table: str, figures: dict) -> str:
    """The table as OUT/NAME.txt and the figures as OUT/NAME.json; returns the table."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.txt").write_text(table + "\n")
    (folder / f"{name}.json").write_text(json.dumps(figures, indent=1))
    return table


def check_options(doc: str, out: str, timed: str) -> argparse.ArgumentParser:
    """The options the data-path checks share (this one and nvimgcodec_check.py); `timed`: the measurements
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


def main(argv=None) -> int:
    p = check_options(__doc__, "gpu-decode-check", "(a) and (b)")
    p.add_argument("--shares", default=SHARES, help="--cpu-decode-share values for (c), 0 always first "
                   "(default %(default)s)")
    p.add_argument("--budget", type=float, default=55.0, help="seconds after which the shares past the first "
                   "two are skipped (default %(default)s; gpu_check.sh passes 70 and gives the check 90)")
    return run_check("gpu_decode_check", check, p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
