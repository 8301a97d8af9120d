"""Files written whole or not at all: a checkpoint, metrics.csv, config.json, a picture."""
from __future__ import annotations

import os
from pathlib import Path


def atomic_write(path, write) -> None:
    """`write(tmp)` fills a temporary file beside `path`, which is flushed to disk and renamed over `path`
    (os.replace is atomic on POSIX): a full disk or a crash mid-write leaves the previous file whole, never a
    truncated one, and no temporary file (but after kill -9, which skips the clean-up: see checkpoint.py)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
