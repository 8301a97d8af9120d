"""train.py in the test process on a tiny built-in data set: its arguments, its main, its metrics."""
from __future__ import annotations

import csv
from pathlib import Path

from alexnet2gpu.cli import train
from alexnet2gpu.data.synthetic import ensure_synthetic

TINY = ["--batch-size", "2", "--workers", "0", "--keep", "1", "--device", "cpu"]


def tiny_data(folder: Path) -> Path:
    """2 classes x 2 training images, 1 validation image each: real JPEG folders under `folder`."""
    return ensure_synthetic(2, 2, 1, cache_dir=folder, log=lambda *a: None)


def run_main(argv, capsys) -> tuple[int, str, str]:
    """train.py's exit code, stdout and stderr."""
    code = train.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def read_metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))
