"""Model input for the next batch made while the current step runs: copies and input maths on a side stream
(`device_batches`), and JPEG decoding in a thread of its own (`made_ahead`).

A batch of 256 uint8 224x224 crops is 38 MB: copied to a GPU on the compute stream, it would hold every
step up by the copy (and the mean, PCA noise and layout conversion after it). `device_batches` issues that
work for batch k+1 (and the JPEG decoding, when the loader decodes on the GPU) on a second CUDA stream as
soon as step k is queued, so it overlaps step k's kernels; the compute stream waits for it only when it
needs batch k+1. On the CPU it is a plain loop.
"""
from __future__ import annotations

import contextlib
import inspect
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, NamedTuple

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
        with torch.cuda.stream(side):  # a loader that decodes on the GPU (gpu/decode.py) decodes here too
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


_END = object()
JOIN_SECONDS = 30


class _Failed(NamedTuple):
    error: BaseException


@dataclass
class ThreadClock:
    """Where the thread of `made_ahead` spent its time, in seconds: waiting for its next item (the loader
    workers), and making it (decoding). What is left of the loop's time it waited for room in the queue."""

    waiting: float = 0.0
    making: float = 0.0

    def since(self, start: ThreadClock) -> ThreadClock:
        """The time added after `start`, a copy taken earlier: one pass of a loader that serves many."""
        return ThreadClock(self.waiting - start.waiting, self.making - start.making)


def made_ahead(items: Iterable, make: Callable, device: torch.device, depth: int = 2,
               clock: ThreadClock | None = None, finished: threading.Event | None = None) -> Iterator:
    """Yield make(item) for each of `items`, in order, made by a thread up to `depth` items ahead; `clock`,
    when given, adds up the thread's time; `finished`, when given, is cleared when the thread starts and set
    once it has ended (it can outlive the loop, see the end).

    For JPEG decoding on the GPU (gpu/loader.py's DecodedLoader): nvJPEG decodes on the host thread that calls
    it and releases the GIL while it works, so in a thread of its own it overlaps the training step's host work
    instead of adding to it. On CUDA the thread works on a stream of its own, and each result is handed over
    behind an event the consumer's current stream waits for. An error in the thread is raised here; leaving
    the loop early stops the thread. `items` may itself be a made_ahead (a chain of threads, each on its own
    stream); this thread then stops that one's when it ends."""
    results: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def put(item) -> bool:
        while not stop.is_set():
            try:
                results.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            produce()
        finally:
            if inspect.isgenerator(items):  # another made_ahead (a chain of threads): stop its thread too
                items.close()
            if finished is not None:
                finished.set()

    def produce():
        try:
            with torch.cuda.device(device) if stream else contextlib.nullcontext(), \
                    torch.cuda.stream(stream) if stream else contextlib.nullcontext():
                ticks = time.perf_counter()
                for item in items:
                    made_at = time.perf_counter()
                    made = make(item)
                    if clock is not None:
                        clock.waiting += made_at - ticks
                        clock.making += time.perf_counter() - made_at
                    ready = None
                    if stream is not None:
                        ready = torch.cuda.Event()
                        ready.record(stream)
                    if not put((made, ready)):
                        return
                    ticks = time.perf_counter()
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which raises it
            put((_Failed(error), None))
            return
        put((_END, None))

    thread = threading.Thread(target=work, name="made_ahead", daemon=True)
    if finished is not None:
        finished.clear()  # here, at the first item asked for: a generator never started has no thread to wait for
    thread.start()
    try:
        while True:
            made, ready = results.get()
            if made is _END:
                return
            if isinstance(made, _Failed):
                raise made.error
            if ready is not None:
                consumer = torch.cuda.current_stream(device)
                consumer.wait_event(ready)
                for t in _tensors(made):
                    if t.is_cuda:
                        t.record_stream(consumer)  # made on the thread's stream, freed after the consumer's use
            yield made
    finally:
        stop.set()
        thread.join(timeout=JOIN_SECONDS)  # it stops at its next put; a loader stuck on a file keeps it longer


def _tensors(made) -> list[torch.Tensor]:
    """The tensors `made` holds: itself, its fields, or the items of a tuple, and those of lists among them (a
    batch's decoded images)."""
    values = made.__dict__.values() if hasattr(made, "__dict__") else (made if isinstance(made, tuple) else (made,))
    found = []
    for v in values:
        found += [t for t in (v if isinstance(v, list) else [v]) if isinstance(t, torch.Tensor)]
    return found
