"""The input-pipeline rows: how many images/s train.py's real loader delivers, to set beside the model's step
rate. `input-pipeline`: JPEG decode, random crop and flip in worker processes; `input-pipeline-gpu`: workers
read the files and the device decodes and crops them (data/gpu/decode.py), except for
the share the workers decode (--cpu-decode-share, train.py's default "auto" unless given), through train.py's
own decoding and cropping threads (loader.py). Mean and PCA noise on the device in both.

It reads the built-in data set (generated once into the cache, as `python train.py` does) or --data DIR.
"""
from __future__ import annotations

import time

import torch

from alexnet2gpu.data.device_input import InputSpec
from alexnet2gpu.data.folders import (IMAGENET_MEAN, EpochSampler, FolderDataset, default_workers, make_loader,
                                      open_folders)
from alexnet2gpu.data.gpu.decode import resolve_cpu_share
from alexnet2gpu.data.gpu.loader import DecodedLoader
from alexnet2gpu.data.synthetic import ensure_synthetic
from alexnet2gpu.distributed.device import synchronize

ROW = "input-pipeline"
GPU_ROW = "input-pipeline-gpu"


def measure_input_pipeline(batch: int, device: torch.device, data: str | None = None, workers: int | None = None,
                           max_batches: int = 20, log=print, decode: str = "cpu", cpu_share="auto") -> dict:
    """Seconds per batch, averaged over up to `max_batches` batches after the first (which pays for starting
    the workers), the worker count and the CPU share. decode="gpu": the batches are decoded and cropped on
    `device` (any device: on the CPU decode_jpeg runs libjpeg, which is how the tests run it), but for the
    `cpu_share` (as --cpu-decode-share: "auto" or a fraction) the workers decode."""
    device = torch.device(device)
    root = data or ensure_synthetic(log=log)
    splits = open_folders(root, None)
    workers = default_workers() if workers is None else workers
    share = resolve_cpu_share(cpu_share, workers) if decode == "gpu" else 0.0
    dataset = FolderDataset(splits.train, "train", decode=decode, cpu_share=share)
    loader = make_loader(dataset, EpochSampler(len(dataset), epoch=0), batch, workers, pin=device.type == "cuda")
    spec = InputSpec(device, torch.tensor(IMAGENET_MEAN), "paper")
    if decode == "gpu":
        loader = DecodedLoader(loader, spec.decode, device, files=spec.decode_files)
    images, start = 0, None
    for i, b in enumerate(loader):
        spec(b, train=True)
        if i == 0:
            synchronize(device)
            start = time.perf_counter()  # the first batch pays for starting the workers
            continue
        images += len(b)
        if i == max_batches:
            break
    synchronize(device)
    seconds = time.perf_counter() - start if start is not None else 0.0
    if images == 0:
        raise ValueError(f"the input-pipeline row needs at least 2 batches of {batch} training images in {root}: "
                         "pass a smaller --batch-size or a larger --data.")
    return {"seconds_per_batch": seconds * batch / images, "workers": workers, "root": str(root), "cpu_share": share}
