"""Model input for the next batch made while the current step runs: copies and input maths on a side stream.

A batch of 256 uint8 224x224 crops is 38 MB: copied to a GPU on the compute stream, it would hold every
step up by the copy (and the mean, PCA noise and layout conversion after it). `device_batches` issues that
work for batch k+1 (and the JPEG decoding, when the loader decodes on the GPU) on a second CUDA stream as
soon as step k is queued, so it overlaps step k's kernels; the compute stream waits for it only when it
needs batch k+1. On the CPU it is a plain loop.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator

import torch


def device_batches(loader: Iterable, prepare: Callable, device: torch.device) -> Iterator[tuple]:
    """Yield (batch, prepare(batch)) for each batch of `loader`; on CUDA, prepare(batch k+1) runs on a side
    stream while the caller works on batch k. `prepare` returns a tensor or a tuple of tensors."""
    if device.type != "cuda":
        for batch in loader:
            yield batch, prepare(batch)
        return
    side = torch.cuda.Stream(device)
    compute = torch.cuda.current_stream(device)
    pending = None
    batches = iter(loader)
    while True:
        with torch.cuda.stream(side):  # a loader that decodes on the GPU (gpu_decode.py) decodes here too
            batch = next(batches, None)
            if batch is None:
                break
            made = prepare(batch)
        ready = torch.cuda.Event()
        ready.record(side)
        if pending is not None:
            yield _handed_over(pending, compute)
        pending = (batch, made, ready)
    if pending is not None:
        yield _handed_over(pending, compute)


def _handed_over(pending, compute: torch.cuda.Stream) -> tuple:
    batch, made, ready = pending
    compute.wait_event(ready)
    for t in made if isinstance(made, tuple) else (made,):
        t.record_stream(compute)  # its memory stays reserved until the compute stream is done with it
    return batch, made
