"""Check the GPU data path on a CUDA machine: how fast nvJPEG and decode_images are (by call size, from two
threads, and from two processes at once: whether decoding in more than one process would pay; and the crops
alone, the crop thread's share of data/gpu/loader.py's two threads), what the input
pipeline delivers with --decode cpu and with --decode gpu at several CPU shares (--cpu-decode-share: which one
feeds most sets data/gpu/decode.py's rate constants), and that the paths cut the same crops.

    PYTHONPATH=. python3 tools/gpu_decode_check.py --out DIR
    PYTHONPATH=. python3 tools/gpu_decode_check.py --device cpu --images 64 --out DIR   # the CPU-safe parts

It writes --images photo-like 256x256 JPEGs (quality 90) into class folders in a temporary folder, prints one
table on stdout (also saved with the figures as DIR/gpu_decode_check.txt and .json), progress on stderr, and
exits with status 1 and one line on stderr when a check fails. About a minute on a 16-core GPU machine: the
shares past 0 and auto are measured only while --budget seconds allow (the table says which were skipped).
"""
from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from pathlib import Path

from check_common import (ODD_FILES, CheckFailed, check_options, copies_for_pipeline, run_check,  # tools/ siblings
                          save, say, write_test_files)
from decode_processes import in_processes

# Mean grey levels two JPEG decoders may differ by on the same file: nvJPEG upsamples chroma and rounds its
# inverse DCT unlike libjpeg (PIL), 1.7 on these images on an H100 with torchvision 0.26. A wrong crop window
# or flip differs by tens.
DECODER_LIMIT = 4.0
SHARES = "0,auto,0.3,0.45,0.6"  # --cpu-decode-share values the input pipeline is measured at, in this order
MIXED_SHARE = 0.5  # the share of the mixed batches compared with the CPU path
CALL_SIZES = (64, 128, 512)  # images per decode call beside --batch: what a call costs beyond its images


# ---------------------------------------------------------------- measurements

def batches_of(samples, batch: int, mode: str = "train", decode: str = "gpu", epoch: int = 0, cpu_share: float = 0.0):
    """Collated loader batches of `samples` in order, built here (no workers)."""
    from alexnet2gpu.data.folders import FolderDataset, collate
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
    """decode_images' crops against data/folders.py's own slicing of the same decoded pixels: 0 when the device's
    indexing cuts exactly the CPU path's windows and flips."""
    import torch

    from alexnet2gpu.data.gpu import decode as gpu_decode
    full = torch.stack([gpu_decode.to_256(im) for im in gpu_decode.decode_files(batch.files(), device, 3)])
    on_device = gpu_decode.crop_batch(full, batch.crop_flip, "train", 224).cpu()
    worst = 0
    for n, (ox, oy, flip) in enumerate(batch.crop_flip.tolist()):
        a = full[n].permute(1, 2, 0).cpu().numpy()[oy:oy + 224, ox:ox + 224]  # FolderDataset's train crop
        a = a[:, ::-1] if flip else a
        reference = torch.from_numpy(a.copy()).permute(2, 0, 1)
        worst = max(worst, int((on_device[n].int() - reference.int()).abs().max()))
    return worst


def path_differences(samples, batch: int, device, shares=(0.0,)) -> list[tuple[int, float]]:
    """For each CPU share, the max and mean absolute pixel difference between decode="gpu" crops on `device`
    (that share of them decoded here, as in a loader worker; the rest by nvJPEG) and decode="cpu" crops."""
    from alexnet2gpu.data.gpu.decode import decode_images
    reference = batches_of(samples, batch, decode="cpu")
    results = []
    for share in shares:
        worst, total, count = 0, 0.0, 0
        for gpu, cpu in zip(batches_of(samples, batch, cpu_share=share), reference):
            images, corrupt, _ = decode_images(gpu, device, 3, "train", 224)
            if corrupt or images.shape != cpu.images.shape:
                raise CheckFailed(f"decode=gpu gave {tuple(images.shape)} with {len(corrupt)} dropped where decode=cpu "
                                  f"gave {tuple(cpu.images.shape)}: the GPU path loses images.")
            diff = (images.cpu().int() - cpu.images.int()).abs()
            worst, total, count = max(worst, int(diff.max())), total + float(diff.float().sum()), count + diff.numel()
        results.append((worst, total / count))
    return results


def odd_files_report(folder: Path, device) -> str:
    """Each odd file through decode_images on `device` against the CPU path: kept or dropped, and the mean
    pixel difference (nvJPEG's refusals go through the CPU fallback)."""
    from alexnet2gpu.data.gpu.decode import decode_images
    samples = [(str(folder / name), 0) for name in ODD_FILES]
    gpu = batches_of(samples, len(samples), mode="center")[0]
    cpu = batches_of(samples, len(samples), mode="center", decode="cpu")[0]
    images, corrupt, kept = decode_images(gpu, device, 3, "center", 224)
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
                  cpu_share="auto") -> tuple[float, float, float]:
    """(images/s, the CPU share used, wall seconds of the whole measurement with the workers' start)."""
    from alexnet2gpu.bench.pipeline import measure_input_pipeline
    start = time.perf_counter()
    r = measure_input_pipeline(batch, device, str(root), workers, max_batches=batches - 1, log=say, decode=decode,
                               cpu_share=cpu_share)
    return batch / r["seconds_per_batch"], r["cpu_share"], time.perf_counter() - start


def parse_shares(text: str) -> list:
    """--shares: comma-separated --cpu-decode-share values; 0 comes first whether listed or not (the all-GPU
    baseline)."""
    from alexnet2gpu.data.gpu.decode import resolve_cpu_share
    from alexnet2gpu.errors import TrainError
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
                last: float = 0.0) -> list:
    """The input pipeline with --decode gpu at each share: [(share as given, share used, images/s, wall
    seconds)]. A share runs only while a run as long as the last one (`last` seconds before the first) still
    ends before `deadline` (time.perf_counter()); a skipped one is (share, None, None, 0)."""
    results = []
    for share in shares:
        if time.perf_counter() + last > deadline:
            results.append((share, None, None, 0.0))
            continue
        say(f"(c) input pipeline, decode=gpu, --cpu-decode-share {share}, {workers} workers, "
            f"{batches} batches")
        value, used, last = pipeline_rate(root, batch, device, "gpu", workers, batches, share)
        results.append((share, used, value, last))
    return results


# ---------------------------------------------------------------- the check

def check(args, started: float) -> str:
    import torch

    from alexnet2gpu.data.folders import default_workers
    from alexnet2gpu.data.gpu.decode import decode_encoded, decode_images, decode_on_device

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
        say("(b) decode_images on files decoded already: the crop thread's part")
        decoded = [decode_encoded(b, device) for b in batches]
        crop_only = rate(lambda: [decode_images(b, device, 3, "train", 224, decoded=d)
                                  for b, d in zip(batches, decoded)], len(files), device, args.repeats)
        say("checking the crop maths and the two paths' pixels")
        maths = crop_maths_difference(batches[0], device)
        if maths:
            raise CheckFailed(f"the device's crops differ from data/folders.py's slicing of the same pixels by up to {maths}: "
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
            ("(b) decode_images: decode + crop + flip", crop_rate),
            ("(b) crop + flip of decoded files (the crop thread)", crop_only)]
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
              f"  crop maths, device vs data/folders.py slicing of the same pixels: max abs pixel difference {maths}",
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


def main(argv=None) -> int:
    p = check_options(__doc__, "gpu-decode-check", "(a) and (b)")
    p.add_argument("--shares", default=SHARES, help="--cpu-decode-share values for (c), 0 always first "
                   "(default %(default)s)")
    p.add_argument("--budget", type=float, default=55.0, help="seconds after which the shares past the first "
                   "two are skipped (default %(default)s; gpu_check.sh passes 70 and gives the check 90)")
    return run_check("gpu_decode_check", check, p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
