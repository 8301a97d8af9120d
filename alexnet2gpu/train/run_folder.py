"""A run's folder: its name, its claim for the run's life, what ran (`run_record`, beside the settings in
config.json and in every checkpoint), and what each epoch writes there (the checkpoint, then metrics.csv and
the pictures). Only the main rank writes."""
from __future__ import annotations

import datetime
import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch

from alexnet2gpu._version import __version__
from alexnet2gpu.errors import TrainError
from alexnet2gpu.files import atomic_write
from alexnet2gpu.weights import checkpoint as ckpt

from .config import Config
from .report import COLUMNS, save_conv1_kernels, save_curves, write_metrics
from .runlock import RunFolderLock, claim_run_folder

# Settings every config.json train.py has written holds: a config.json without them is another program's.
RUN_CONFIG_KEYS = {"epochs", "lr", "lr_steps", "layout", "pca", "crop", "out", "run_name", "resume"}
# The key of what ran, beside the settings' keys in config.json and beside "config" in a checkpoint. The
# settings stay where they were: readers of config.json and a resume (which reads a checkpoint's "config")
# see the same keys as before.
RESOLVED = "resolved"


def run_record(layout: str, devices, ctx, data, built_in: bool, decode: str, cpu_decode_share: float | None) -> dict:
    """What this invocation runs where the settings say "auto" or nothing: the versions, the layout, the
    devices and the world (a world.Context), the data folder as an absolute path (the built-in set's cache
    folder), its classes and mean (a loaders.RunData), the decoding. Under torchrun the devices are rank 0's;
    every rank takes cuda:LOCAL_RANK, or the CPU, alike."""
    names = [_device_name(torch.device(d)) for d in devices]
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    # plain str, int, float, list and None: a checkpoint is loaded with weights_only=True (TorchVersion is not)
    return {"alexnet2gpu": __version__, "torch": str(torch.__version__), "torch_cuda": torch.version.cuda,
            "python": platform.python_version(), "started": started, "layout": layout, "devices": names,
            "gpus": [torch.cuda.get_device_name(d) for d in names if d.startswith("cuda")],
            "world_size": ctx.world_size, "tower_pairs": ctx.num_pairs, "data": os.path.abspath(data.root),
            "data_built_in": built_in, "num_classes": data.num_classes, "mean": [float(m) for m in data.mean],
            "decode": decode, "cpu_decode_share": cpu_decode_share}


def _device_name(device: torch.device) -> str:
    """"cuda:0", never a bare "cuda": the index the run's tensors went to."""
    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


def run_folder_of(checkpoint) -> Path | None:
    """The run folder a checkpoint belongs to: RUN when it lies in RUN/checkpoints/ and RUN holds train.py's
    config.json (and, where there is one, train.py's metrics.csv); None for a checkpoint anywhere else (copied
    to models/, downloaded), whose surroundings a resume must never take for a run folder and overwrite."""
    path = Path(checkpoint).resolve()
    run = path.parent.parent
    if path.parent.name != ckpt.CHECKPOINTS:
        return None
    try:
        saved = json.loads((run / "config.json").read_text())
        metrics = run / "metrics.csv"
        header = metrics.open().readline().strip() if metrics.exists() else None
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or not RUN_CONFIG_KEYS <= saved.keys():
        return None
    return run if header is None or header.split(",")[:2] == list(COLUMNS[:2]) else None


def new_run_dir(cfg: Config) -> Path:
    """--out/--run-name, or --out/run-DATE-TIME numbered past the folders already there."""
    name = cfg.run_name or time.strftime("run-%Y%m%d-%H%M%S")
    path, n = Path(cfg.out) / name, 1
    while cfg.run_name is None and path.exists():
        n += 1
        path = Path(cfg.out) / f"{name}-{n}"
    return path


def claim_run_dir(run_dir: Path, cfg: Config, history: list[dict], new: bool, record: dict) -> RunFolderLock:
    """Lock the run folder for this run's life (lock.path is the folder): a second run on it gets one
    sentence. `new`: a folder this run starts (a fresh run, or a resume of a checkpoint outside any run
    folder), never one that holds another run's checkpoints. Writes config.json (the settings, and under
    "resolved" this invocation's `run_record`), and on resume the checkpoint's metrics.csv."""
    lock = claim_run_folder(run_dir, numbered=new and cfg.run_name is None)
    run_dir = lock.path
    try:
        if new and ckpt.newest_in(run_dir):  # best.pt alone too: its epoch files may have been pruned
            raise TrainError(f"run folder {run_dir} holds another run's checkpoints: continue that run with "
                             f"--resume {run_dir}, or pass another --run-name.")
        config = {**asdict(cfg), RESOLVED: record}
        atomic_write(run_dir / "config.json", lambda tmp: tmp.write_text(json.dumps(config, indent=1)))
        if history:  # resumed: metrics.csv says what the checkpoint says, whatever a failed write left
            write_metrics(run_dir / "metrics.csv", history)
    except OSError as e:
        lock.release()
        raise TrainError(f"cannot write in the run folder {run_dir} ({e.strerror or e}): pass --out a "
                         "folder you can write to.") from None
    except TrainError:
        lock.release()
        raise
    return lock


def write_reports(run_dir: Path, history: list[dict], weights: dict) -> None:
    """metrics.csv, curves.png and conv1_kernels.png."""
    try:
        write_metrics(run_dir / "metrics.csv", history)
        save_curves(run_dir / "curves.png", history)
        save_conv1_kernels(run_dir / "conv1_kernels.png", weights["conv1.weight"])
    except OSError as e:
        raise TrainError(f"could not write the reports in {run_dir} ({e.strerror or e}): free disk space "
                         f"and resume with --resume {run_dir}.") from None


def write_epoch(run_dir: Path, state: dict, epoch: int, is_best: bool, keep: int, weights: dict) -> str:
    """The epoch's checkpoint, then the reports; returns the checkpoint's path. In that order, metrics.csv
    never holds a row for an epoch whose checkpoint failed to write."""
    path = str(ckpt.write_checkpoint(run_dir, state, epoch, is_best, keep))
    write_reports(run_dir, state["metrics"], weights)
    return path
