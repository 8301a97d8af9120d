"""The batch decode's rate from several processes at once, for tools/gpu_decode_check.py.

torchvision's nvJPEG decoder takes one call at a time per process (a lock in its C++ code), so threads cannot
tell whether the GPU's decoding is bound by that process's host work or by the GPU itself. Processes can: each
has its own decoder. If N processes together decode about N times one process's rate, decoding in more than
one process (the loader's workers on the GPU) would pay; if not, the device is the limit.
"""
from __future__ import annotations

import multiprocessing
import queue
import time

import numpy as np

START_SECONDS = 180  # each process imports torch and starts CUDA before the timed part


def _decode_in_process(paths, batch, device, repeats, barrier, results) -> None:
    """Spawned: decode `paths` in calls of `batch` once as a warm-up, wait for the others, then `repeats` times;
    put the seconds of the timed part, or the error."""
    try:
        import torch

        from alexnet2gpu.data.gpu.decode import decode_on_device
        from alexnet2gpu.distributed.device import synchronize
        files = [torch.from_numpy(np.fromfile(p, dtype=np.uint8)) for p in paths]
        chunks = [files[s:s + batch] for s in range(0, len(files), batch)]
        device = torch.device(device)

        def once():
            for chunk in chunks:
                decode_on_device(chunk, device, 3)
            synchronize(device)

        once()
        barrier.wait(START_SECONDS)
        start = time.perf_counter()
        for _ in range(repeats):
            once()
        results.put(time.perf_counter() - start)
    except Exception as e:  # noqa: BLE001 - reported by the parent in one line
        results.put(f"{type(e).__name__}: {e}")


def in_processes(paths: list[str], batch: int, device: str, processes: int, repeats: int) -> float:
    """Images/s of `processes` spawned processes each decoding every file of `paths` `repeats` times at once."""
    context = multiprocessing.get_context("spawn")  # CUDA does not survive a fork
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [context.Process(target=_decode_in_process, args=(paths, batch, device, repeats, barrier, results))
               for _ in range(processes)]
    for w in workers:
        w.start()
    try:
        times = [results.get(timeout=2 * START_SECONDS) for _ in workers]
    except queue.Empty:
        raise RuntimeError(f"the {processes} decoding processes did not finish in {2 * START_SECONDS} s") from None
    finally:
        for w in workers:
            w.join(10)
            if w.is_alive():
                w.kill()
    errors = [t for t in times if isinstance(t, str)]
    if errors:
        raise RuntimeError(f"a decoding process failed: {errors[0]}")
    return processes * len(paths) * repeats / max(times)
