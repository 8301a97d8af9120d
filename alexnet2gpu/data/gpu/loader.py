"""The GPU data path's loader (`--decode gpu`): batches of JPEG bytes from the loader workers, decoded and cut
into crops on the device by threads of their own, ahead of the training loop.

Two threads, one after the other (prefetch.made_ahead twice):
- the decoding thread takes each batch from the loader and decodes its files (decode.decode_encoded).
  torchvision's nvJPEG call returns only once the whole batch is decoded, so this thread is held for as long
  as the decoder works;
- the crop thread stacks the decoded images, cuts the crops and adds the loader workers' own crops (the
  CPU share) at their places (decode.decode_batch).
With one thread doing both, the decoder stood idle while the crops of the last batch were cut and the next
batch was taken from the loader; now the decoder starts on the next batch as soon as it hands one over. Each
thread keeps a clock (`prefetch.ThreadClock`), and `decode_thread_note` says after every epoch which part of
the path held it back.
"""
from __future__ import annotations

import threading
from dataclasses import replace
from typing import Callable

import torch

from alexnet2gpu.errors import TrainError

from ..prefetch import JOIN_SECONDS, ThreadClock, made_ahead


class DecodedLoader:
    """A loader of encoded batches seen through `files` then `decode` (InputSpec.decode_files, InputSpec.decode):
    the training and evaluation loops get decoded batches, and count and log the dropped images as any
    unreadable file. `files` (batch -> (batch, its files decoded)) runs in the decoding thread, `decode` (that
    pair -> the decoded batch) in the crop thread, each up to `ahead` batches before the loop asks, so the
    decoder's host work overlaps the training step's instead of adding to it."""

    def __init__(self, loader, decode: Callable, device, files: Callable, ahead: int = 2):
        self.loader, self.decode, self.files = loader, decode, files
        self.device, self.ahead = torch.device(device), ahead
        self.clock = ThreadClock()  # the decoding thread's time over every pass: the loader, then the decoder
        self.crop_clock = ThreadClock()  # the crop thread's: the decoding thread, then the crops
        self.finished = None  # set when the last pass's decoding thread has ended

    def __iter__(self):
        if self.ahead < 1:
            return (self.decode(*self.files(batch)) for batch in self.loader)
        # A pass left early (--max-steps) stops its threads; the decoding thread may still be inside the loader,
        # waiting for a worker stuck on a file, and a new pass of the same loader (its workers persist) must not
        # run beside it.
        if self.finished is not None and not self.finished.wait(JOIN_SECONDS):
            raise TrainError(f"the GPU decoding thread of the last pass still waits for a loader worker after "
                             f"{JOIN_SECONDS:g} s (a file read that hangs?): check the data folder's storage, then "
                             "resume from the last checkpoint.")
        self.finished = threading.Event()
        self.finished.set()  # until the pass's thread starts (made_ahead clears it)
        decoded = made_ahead(self.loader, self.files, self.device, self.ahead, self.clock, self.finished)
        return made_ahead(decoded, lambda pair: self.decode(*pair), self.device, self.ahead, self.crop_clock)

    def __len__(self) -> int:
        return len(self.loader)

    def clocks(self) -> tuple[ThreadClock, ThreadClock]:
        """Copies of the (decoding, crop) threads' clocks, to take the time of one epoch with `ThreadClock.since`."""
        return replace(self.clock), replace(self.crop_clock)


def decode_thread_note(clock: ThreadClock, images: int, seconds: float, crop_clock: ThreadClock | None = None) -> str:
    """One line on what held the GPU data path back over an epoch of `images` in `seconds`: the decoding thread
    busy all the time means the decoder is the limit; waiting, the loader workers are (or, with a crop
    thread, that thread: then its own share of the epoch follows). Rates count every image of the batches
    readied, the CPU share's crops (decoded by the workers) among them."""
    seconds = max(seconds, 1e-9)
    rate = f"batches readied at {images / clock.making:,.0f} images/s" if clock.making > 0 else "no batch decoded"
    note = (f"GPU decode thread: {clock.making / seconds:.0%} of the epoch decoding ({rate}), "
            f"{clock.waiting / seconds:.0%} waiting for the loader workers")
    if crop_clock is not None and crop_clock.making > 0:
        note += (f"; crop thread: {crop_clock.making / seconds:.0%} cutting crops (at "
                 f"{images / crop_clock.making:,.0f} images/s)")
    return note
