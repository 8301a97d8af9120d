"""Checkpoints: atomic writes, every epoch plus the best, the last few kept, resume from the latest run.

Contents are layout-free: canonical weights and canonical momentum buffers (model.to_canonical), so a
checkpoint written by any layout at any world size loads into any other. Written to a temporary file and
renamed (os.replace is atomic on POSIX), so a crash or a full disk mid-write leaves the previous one intact;
loaded with weights_only=True, so a checkpoint cannot run code.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from alexnet2gpu.errors import TrainError

FORMAT = "alexnet2gpu-checkpoint-v1"
CHECKPOINTS = "checkpoints"
EPOCH_FILE = re.compile(r"epoch_(\d+)\.pt$")
BEST = "best.pt"


def atomic_save(obj, path: Path) -> None:
    """torch.save to path.tmp, flush to disk, then rename over `path`; the temporary file never survives."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def epoch_files(run_dir: Path) -> list[Path]:
    """The run's epoch checkpoints, oldest first."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := EPOCH_FILE.search(p.name))]
    return [p for _, p in sorted(found)]


def write_checkpoint(run_dir: Path, state: dict, epoch: int, is_best: bool, keep: int = 2) -> Path:
    """Write epoch_NNNN.pt (and best.pt as a hard link to it when best), then drop all but the last `keep`.

    A failed write raises TrainError naming the last good checkpoint, which is left as it was.
    """
    folder = Path(run_dir) / CHECKPOINTS
    path = folder / f"epoch_{epoch:04d}.pt"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_save(dict(state, format=FORMAT, epoch=epoch), path)
        if is_best:
            _link_atomic(path, folder / BEST)
    except (OSError, RuntimeError) as e:  # torch.save's C++ writer reports a full disk as RuntimeError
        previous = [p for p in epoch_files(run_dir) if p != path]
        kept = f"the previous checkpoint {previous[-1]} is intact" if previous else "no earlier checkpoint exists"
        reason = getattr(e, "strerror", None) or str(e).splitlines()[0]
        raise TrainError(f"could not write checkpoint {path} ({reason}); {kept}: free disk space and resume "
                         f"with --resume {run_dir}.") from None
    for old in epoch_files(run_dir)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)  # best.pt is a hard link, so the best epoch survives pruning
    return path


def _link_atomic(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # no hard links on this file system: copy instead
        atomic_save(torch.load(src, map_location="cpu", weights_only=True), dst)
        return
    os.replace(tmp, dst)


def load_checkpoint(path) -> dict:
    path = Path(path)
    if path.is_dir():
        files = epoch_files(path) or epoch_files(path.parent)
        if not files:
            raise TrainError(f"{path} holds no checkpoints: pass a run folder with {CHECKPOINTS}/epoch_NNNN.pt "
                             "or a checkpoint file.")
        path = files[-1]
    if path.suffix == ".safetensors":  # weights only: io.load_weights reads it
        raise TrainError(f"{path} holds weights only, without the optimizer state and epoch a run continues from: "
                         f"start a new run from it with --init-from {path}, or resume from a .pt checkpoint.")
    if not path.is_file():
        raise TrainError(f"checkpoint {path} does not exist: pass a .pt file written by train.py or a run folder.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise TrainError(f"checkpoint {path} could not be read ({str(e).splitlines()[0][:120]}): it is truncated "
                         "or not a train.py checkpoint; pick an earlier one from the same folder.") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise TrainError(f"{path} is not a train.py checkpoint ({FORMAT}): pass one written by train.py.")
    state["path"] = str(path)
    return state


def run_dir_of(checkpoint_path) -> Path:
    """checkpoints live in RUN/checkpoints/, so the run folder is two levels up."""
    return Path(checkpoint_path).resolve().parent.parent


def latest_checkpoint(out_dir) -> Path | None:
    """The newest epoch checkpoint of any run under `out_dir` (for --resume auto), or None."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return None
    candidates = [files[-1] for run in out_dir.iterdir() if run.is_dir() and (files := epoch_files(run))]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None
