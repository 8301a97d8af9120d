"""A one-line progress bar with images/s and ETA; silent when stdout is not a terminal (logs, CI, pipes)."""
from __future__ import annotations

import sys
import time


def format_seconds(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    def __init__(self, total: int, desc: str, enabled: bool | None = None, stream=None, width: int = 24):
        self.stream = stream or sys.stdout
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total, self.desc, self.width = max(1, total), desc, width
        self.done, self.start, self.last_draw = 0, time.perf_counter(), 0.0
        self.extra = ""

    def update(self, images: int, extra: str = "") -> None:
        self.done += images
        self.extra = extra or self.extra
        now = time.perf_counter()
        if self.enabled and (now - self.last_draw > 0.2 or self.done >= self.total):
            self.last_draw = now
            self.stream.write("\r" + self.line(now) + "\x1b[K")
            self.stream.flush()

    def line(self, now: float | None = None) -> str:
        elapsed = (now or time.perf_counter()) - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        frac = min(1.0, self.done / self.total)
        bar = "#" * int(frac * self.width) + "." * (self.width - int(frac * self.width))
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        return (f"{self.desc} [{bar}] {self.done}/{self.total} {rate:.1f} img/s "
                f"ETA {format_seconds(eta)} {self.extra}").rstrip()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
