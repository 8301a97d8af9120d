"""Checkpoints: atomic writes, every epoch plus the best, the last few kept, resume from the latest run.

Contents are layout-free: canonical weights and canonical momentum buffers (model.to_canonical), so a
checkpoint written by any layout at any world size loads into any other. Written to a temporary file and
renamed (os.replace is atomic on POSIX), so a crash or a full disk mid-write leaves the previous one intact;
loaded with weights_only=True, so a checkpoint cannot run code, and only after the CRC-32 of every entry of
torch.save's zip container matches, since torch.load itself does not check them.
"""
from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import torch

from alexnet2gpu.distributed.world import first_line
from alexnet2gpu.errors import TrainError
from alexnet2gpu.files import atomic_write

FORMAT = "alexnet2gpu-checkpoint-v1"
CHECKPOINTS = "checkpoints"
EPOCH_FILE = re.compile(r"epoch_(\d+)\.pt$")
BEST = "best.pt"
TEMPORARY = re.compile(r"(epoch_\d+|best)\.pt\.tmp")  # the names atomic_save and _link_atomic write to
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since torch 1.6; older files are a bare pickle, without CRCs


def atomic_save(obj, path: Path) -> None:
    """torch.save to path.tmp, flushed to disk, then renamed over `path` (files.atomic_write)."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


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
        remove_stale_temporaries(folder)
        atomic_save(dict(state, format=FORMAT, epoch=epoch), path)
        if is_best:
            _link_atomic(path, folder / BEST)
    except (OSError, RuntimeError) as e:  # torch.save's C++ writer reports a full disk as RuntimeError
        previous = [p for p in epoch_files(run_dir) if p != path]
        kept = f"the previous checkpoint {previous[-1]} is intact" if previous else "no earlier checkpoint exists"
        reason = getattr(e, "strerror", None) or first_line(e)
        raise TrainError(f"could not write checkpoint {path} ({reason}); {kept}: free disk space and resume "
                         f"with --resume {run_dir}.") from None
    for old in epoch_files(run_dir)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)  # best.pt is a hard link, so the best epoch survives pruning
    return path


def remove_stale_temporaries(folder: Path) -> None:
    """Delete the partial files a killed write left (kill -9 skips atomic_save's clean-up): only the names this
    writer uses, and only from the run that holds the folder, so never a write in progress."""
    for path in Path(folder).iterdir():
        if TEMPORARY.fullmatch(path.name):
            path.unlink(missing_ok=True)


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
    """The state train.py saved in `path`: a checkpoint file, or a run folder's latest checkpoint."""
    path = Path(path)
    if path.is_dir():
        path = checkpoint_in(path)
    if path.suffix == ".safetensors":  # weights only: io.load_weights reads it
        raise TrainError(f"{path} holds weights only, without the optimizer state and epoch a run continues from: "
                         f"start a new run from it with --init-from {path}, or resume from a .pt checkpoint.")
    if not path.is_file():
        raise TrainError(f"checkpoint {path} does not exist: pass a .pt file written by train.py or a run folder.")
    try:
        check_intact(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except TrainError:
        raise
    except OSError as e:
        raise TrainError(f"checkpoint {path} could not be read ({e.strerror or first_line(e)}): check that it is "
                         "readable, or use another checkpoint.") from None
    except Exception as e:
        raise TrainError(f"checkpoint {path} could not be read ({first_line(e)[:120]}): it is truncated or not a "
                         "train.py checkpoint; pick an earlier one from the same folder.") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise TrainError(f"{path} is not a train.py checkpoint ({FORMAT}): pass one written by train.py.")
    state["path"] = str(path)
    return state


def newest_in(run_dir: Path) -> Path | None:
    """A run's latest epoch checkpoint, else its best.pt (the epoch checkpoints were removed), else None."""
    files = epoch_files(run_dir)
    best = Path(run_dir) / CHECKPOINTS / BEST
    return files[-1] if files else best if best.is_file() else None


def checkpoint_in(folder: Path) -> Path:
    """`newest_in` a run folder or its checkpoints/ folder, or one sentence saying what is there instead."""
    checkpoints = folder if folder.name == CHECKPOINTS else folder / CHECKPOINTS
    found = newest_in(checkpoints.parent)
    if found is not None:
        return found
    if not checkpoints.is_dir():
        there = f"it has no {CHECKPOINTS}/ folder"
    else:
        names = sorted(p.name for p in checkpoints.iterdir())
        listed = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        there = f"{checkpoints} holds {listed} but no epoch_NNNN.pt or best.pt" if names else f"{checkpoints} is empty"
    raise TrainError(f"{folder} holds no checkpoints: {there}; pass the checkpoint file itself, or a run folder "
                     f"with {CHECKPOINTS}/epoch_NNNN.pt or {BEST}.")


def check_intact(path: Path) -> None:
    """Refuse an empty file, and a zip whose entries fail their CRC-32 (a flipped byte, which torch.load would
    read as a wrong weight). One more read of the file: about 0.1 s for a 490 MB checkpoint in the page cache."""
    with open(path, "rb") as f:
        magic = f.read(len(ZIP_MAGIC))
    if not magic:
        raise TrainError(f"{path} is empty (0 bytes): restore it from a copy, or use another checkpoint.")
    if magic != ZIP_MAGIC:
        return  # not a zip: torch.load decides what it is
    try:
        with zipfile.ZipFile(path) as archive:
            try:
                bad = archive.testzip()
            except OSError:
                raise
            except Exception as e:  # a garbled local header: wrong sizes, an unknown compression
                damage = f"an entry cannot be read: {first_line(e)}"
            else:  # torch.save puts every entry under a folder named after the file: name the entry
                damage = bad and f"a CRC check fails in {bad.split('/', 1)[-1]}"
    except OSError:
        raise
    except Exception:
        damage = "it is cut short or its zip directory is garbled"
    if damage:
        raise TrainError(f"{path} is damaged ({damage}): restore it from a copy, or use another checkpoint.")


def latest_checkpoint(out_dir) -> Path | None:
    """The newest checkpoint (`newest_in`) of any run under `out_dir` (for --resume auto), or None."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return None
    candidates = [found for run in out_dir.iterdir() if run.is_dir() and (found := newest_in(run))]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None
