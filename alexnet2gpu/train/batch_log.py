"""Progress lines for logs that are files (nohup, Slurm, CI), and the same figures for TensorBoard.

The progress bar (progress.py) is drawn only on a terminal, so a batch job would print nothing between
epochs. `StepLog` writes one line every `--log-every` steps, or about every DEFAULT_SECONDS of training
when that is not given: the time, step, epoch progress, loss, lr, images/s and the share of the time spent
waiting for data since the last line, and the peak GPU memory on CUDA. The training loop asks `due` after
every step (a clock read, no device access) and reads the loss from the device only when a line is due.
On a terminal without --log-every the lines go to RUN/train.log alone (run_log.py): a log is a file.
"""
from __future__ import annotations

import sys
import time

import torch

from .optim import get_lr

DEFAULT_SECONDS = 30.0


class StepLog:
    """`every`: a line every that many steps (None: about every `seconds`; 0: none). `lines`: write them to
    `stream` (train.py: when stdout is no terminal or --log-every is given). `file`: where the lines go when
    they are not written to `stream` (run_log.file_writer: RUN/train.log alone). `board`: a board.Board that
    gets the same figures as scalars."""

    def __init__(self, optimizer, device: torch.device, every: int | None = None, lines: bool = True,
                 board=None, num_pairs: int = 1, stream=None, seconds: float | None = None, file=None):
        self.optimizer, self.device, self.every = optimizer, torch.device(device), every
        self.seconds = DEFAULT_SECONDS if seconds is None else seconds
        self.lines, self.board, self.num_pairs, self.file = lines, board, num_pairs, file
        self.stream = stream or sys.stdout
        self.begin(0, 0, 0)

    @property
    def active(self) -> bool:
        return self.every != 0 and (self.lines or self.file is not None or self.board is not None)

    def begin(self, epoch: int, epochs: int, total_images: int) -> None:
        """Called before each epoch: rates are measured from here (the loader's start-up counts as waiting)."""
        self.epoch, self.epochs, self.total = epoch, epochs, max(1, total_images)
        self.last = (time.perf_counter(), 0, 0.0)  # time, images done, seconds waited

    def due(self, step: int, now: float) -> bool:
        if not self.active:
            return False
        if self.every:
            return step % self.every == 0
        return now - self.last[0] >= self.seconds

    def record(self, step: int, loss: float, images: int, wait_seconds: float, now: float | None = None) -> str:
        """One line for the steps since the last: `images` and `wait_seconds` are the epoch's so far (this
        tower pair's; images/s counts every pair's)."""
        now = time.perf_counter() if now is None else now
        then, images_then, wait_then = self.last
        elapsed = max(now - then, 1e-9)
        values = {"loss": loss, "lr": get_lr(self.optimizer),
                  "images_per_s": (images - images_then) * self.num_pairs / elapsed,
                  "data_wait_share": min(1.0, (wait_seconds - wait_then) / elapsed),
                  "epoch": self.epoch - 1 + min(1.0, images / self.total)}
        memory = ""
        if self.device.type == "cuda":  # the allocator's counter: no device synchronisation
            values["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
            memory = f" | peak GPU mem {values['peak_gpu_memory_gib']:.2f} GiB"
        self.last = (now, images, wait_seconds)
        line = (f"{time.strftime('%H:%M:%S')} step {step} | epoch {self.epoch}/{self.epochs} "
                f"{100 * min(1.0, images / self.total):.0f} % ({images}/{self.total}) | loss {loss:.4f} | "
                f"lr {values['lr']:.3g} | {values['images_per_s']:.1f} img/s | "
                f"data wait {100 * values['data_wait_share']:.0f} %{memory}")
        if self.lines:
            # On a terminal the progress bar holds the current line: clear it, the bar redraws below.
            prefix = "\r\x1b[K" if self.stream.isatty() else ""
            self.stream.write(prefix + line + "\n")
            self.stream.flush()
        elif self.file is not None:
            self.file(line)
        if self.board is not None:
            self.board.scalars("train", step, values)
        return line
