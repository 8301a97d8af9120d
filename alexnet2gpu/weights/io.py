"""Trained weights in and out: the one loader of weights (a train.py checkpoint, a run folder or a
.safetensors file), the .safetensors writer, and the initial weights of a fine-tuning run.

Everything that takes weights (train.py --init-from and --evaluate, hubconf.py, the predict and export
commands) reads them with `load_weights`, so each accepts every format. A .safetensors file holds the
canonical weights (model.canonical_shapes) and, as string metadata, what is needed to use them: the class
names, the per-channel mean, the crop size, num_classes, in_channels, the training config and a CRC-32 per
tensor (safetensors itself stores no checksum, so flipped bytes would load as wrong weights).
"""
from __future__ import annotations

import json
import math
import os
import struct
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from alexnet2gpu.distributed.world import first_line
from alexnet2gpu.errors import TrainError
from alexnet2gpu.model.layers import CROPS, FC8, check_state_dict
from alexnet2gpu.optional import require

from . import checkpoint as ckpt

SAFETENSORS = ".safetensors"
WEIGHTS_FORMAT = "alexnet2gpu-weights-v1"
TAKES = "a train.py checkpoint (.pt), a run folder or a .safetensors file"  # what load_weights reads
ELSEWHERE = "docs/using-weights.md shows how"  # running an exported .onnx or .pt2 file
# First bytes of the images a user may pass where the weights go (predict WEIGHTS IMAGE, swapped).
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"RIFF")


@dataclass
class Weights:
    """Canonical weights and what a user of them needs to know."""

    model: dict[str, torch.Tensor]  # canonical names: conv1.weight ... fc8.bias
    path: str
    classes: list[str] | None = None  # class folder names in label order (ILSVRC: wnids)
    mean: list[float] | None = None  # per-channel mean on 0..255, subtracted from the input
    crop: int = 224
    epoch: int | None = None
    config: dict = field(default_factory=dict)  # the training run's config, as saved

    @property
    def num_classes(self) -> int:
        return self.model[f"{FC8}.weight"].shape[0]

    @property
    def in_channels(self) -> int:
        return self.model["conv1.weight"].shape[1]


def load_weights(path) -> Weights:
    """The weights of a .safetensors file, a train.py checkpoint (.pt) or a run folder's latest checkpoint.
    Any other file (an exported .onnx or .pt2, an image) is refused in one sentence saying what it is."""
    path = Path(path)
    if not path.exists():
        raise TrainError(f"{path} does not exist: pass {TAKES}.")
    kind = "checkpoint" if path.is_dir() else file_kind(path)
    if kind == SAFETENSORS:
        weights = _read_safetensors(path)
    elif kind != "checkpoint":
        raise TrainError(f"{path} is {kind}: pass {TAKES}.")
    else:
        state = ckpt.load_checkpoint(path)
        config = dict(state.get("config") or {})
        weights = Weights(state["model"], state["path"], state.get("classes"), state.get("mean"),
                          config.get("crop", 224), state.get("epoch"), config)
    _check_usable(weights)
    return weights


def file_kind(path: Path) -> str:
    """What a weights file holds, from its first bytes (its name where they do not tell): SAFETENSORS,
    "checkpoint" (torch.save's zip, a pre-1.6 pickle, or a file too damaged to tell, which the checkpoint
    loader then names), or the words for anything else, for the sentence that refuses it."""
    if path.suffix == SAFETENSORS:  # its reader names a cut or garbled file
        return SAFETENSORS
    with open(path, "rb") as f:
        head = f.read(64)
    size = path.stat().st_size
    # safetensors: an 8-byte little-endian header length, then the JSON header
    if len(head) > 8 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] <= size - 8:
        return SAFETENSORS
    if head.startswith(ckpt.ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return "checkpoint"  # cut short or garbled: check_intact says so
        if any(n.endswith("/archive_format") for n in names) or path.suffix == ".pt2":
            return (f"a torch.export program (.pt2), which loads with torch.export.load(...).module(), not here "
                    f"({ELSEWHERE})")
        if any(n.endswith("data.pkl") for n in names):
            return "checkpoint"
        return "a zip archive that torch.save did not write (it holds no data.pkl)"
    if not head or head.startswith(b"\x80"):  # empty (the checkpoint loader says so), or torch's pre-1.6 pickle
        return "checkpoint"
    # ONNX is a protobuf ModelProto: field 1 (ir_version, a small varint), then field 2 (producer_name)
    if path.suffix == ".onnx" or (head[:1] == b"\x08" and head[2:3] == b"\x12"):
        return f"an ONNX model, which runs in ONNX Runtime, not here ({ELSEWHERE})"
    if head.startswith(IMAGE_MAGIC):
        return "an image, not weights"
    return "neither a train.py checkpoint nor a .safetensors file (it is no zip archive and has no safetensors header)"


def _check_usable(weights: Weights) -> None:
    """Refuse what would give a silently wrong answer: class names that are not one per row of fc8, a mean that
    is not one number per input channel, another crop, a weight that is NaN or infinite."""
    classes, mean, crop = weights.classes, weights.mean, weights.crop
    wrong = None
    if classes is not None and not (isinstance(classes, list) and len(classes) == weights.num_classes
                                    and all(isinstance(c, str) for c in classes)):
        wrong = (f"'classes' must be a JSON list of {weights.num_classes} class names (one per row of fc8), not "
                 + _described(classes, "names", str))
    elif mean is not None and not (isinstance(mean, list) and len(mean) == weights.in_channels
                                   and all(_is_number(m) for m in mean)):
        wrong = (f"'mean' must be a JSON list of {weights.in_channels} numbers (one per input channel), not "
                 + _described(mean, "numbers", float))
    elif crop not in CROPS or not isinstance(crop, int):
        wrong = f"'crop' must be {' or '.join(map(str, CROPS))}, not {crop!r}"
    if wrong:
        raise TrainError(f"{weights.path} has metadata that cannot be used: {wrong}; export it again from its "
                         "checkpoint.")
    for name, tensor in weights.model.items():  # min and max carry a NaN through: 30x faster than isfinite().all()
        if not all(map(math.isfinite, torch.aminmax(tensor))):
            raise TrainError(f"{weights.path} holds a value that is not finite (NaN or infinite) in {name}: it is "
                             "damaged, or its run diverged; use other weights.")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _described(value, items: str, kind: type) -> str:
    """What a metadata field holds instead of a list of `items`, in a few words."""
    if not isinstance(value, list):
        return f"a {type(value).__name__}"
    odd = next((v for v in value if not (_is_number(v) if kind is float else isinstance(v, kind))), None)
    return f"a list holding {odd!r}" if odd is not None else f"{len(value)} {items}"


def tensor_crcs(tensors: dict[str, torch.Tensor]) -> dict[str, int]:
    """The CRC-32 of each tensor's bytes, as a .safetensors file holds them (little-endian, row-major)."""
    return {name: zlib.crc32(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
            for name, t in sorted(tensors.items())}


def _read_safetensors(path: Path) -> Weights:
    if not path.is_file():
        raise TrainError(f"weights file {path} does not exist: pass a .safetensors file written by "
                         "python -m alexnet2gpu.export, a train.py checkpoint or a run folder.")
    st = require("safetensors.torch", f"reading {path.name}")
    try:  # safetensors checks the header against the file's size: a cut, lengthened or garbled file fails here
        tensors = st.load_file(str(path))
        with require("safetensors", f"reading {path.name}").safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise TrainError(f"{path} is damaged or not a safetensors file ({first_line(e)[:120]}): export it again "
                         "from its checkpoint.") from None

    def field_(name, default=None):
        try:
            return json.loads(meta[name]) if name in meta else default
        except ValueError:
            raise TrainError(f"{path} has metadata that cannot be used: '{name}' is not JSON; export it again from "
                             "its checkpoint.") from None

    stored = field_("crc32")  # absent from files other tools (or earlier versions) wrote
    if isinstance(stored, dict):
        bad = next((k for k, crc in tensor_crcs(tensors).items() if stored.get(k, crc) != crc), None)
        if bad is not None:
            raise TrainError(f"{path} is damaged (a CRC check fails in {bad}): export it again from its checkpoint.")
    try:
        num_classes, in_channels = tensors[f"{FC8}.weight"].shape[0], tensors["conv1.weight"].shape[1]
        check_state_dict(tensors, num_classes, in_channels)
    except (KeyError, ValueError) as e:
        raise TrainError(f"{path} does not hold alexnet2gpu weights ({e}).") from None
    return Weights(tensors, str(path), field_("classes"), field_("mean"), field_("crop", 224), field_("epoch"),
                   field_("config", {}))


def save_safetensors(weights: Weights, path) -> Path:
    """Write the canonical weights with their metadata (JSON strings), to a temporary file then renamed."""
    st = require("safetensors.torch", "writing .safetensors")
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in weights.model.items()}
    meta = dict(format=WEIGHTS_FORMAT, num_classes=weights.num_classes, in_channels=weights.in_channels,
                crop=weights.crop, classes=weights.classes, mean=weights.mean, epoch=weights.epoch,
                config=weights.config, crc32=tensor_crcs(tensors))
    with written(path) as tmp:
        st.save_file(tensors, str(tmp), metadata={k: json.dumps(v) for k, v in meta.items()})
        os.chmod(tmp, 0o644)  # as torch.save's files (the writer makes them private)
    return path


@contextmanager
def written(path: Path):
    """A temporary name beside `path` to write to, renamed to `path` once complete: a write that fails (a full
    disk) leaves an earlier file there as it was, and is one sentence whatever the writer raised."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except TrainError:
        raise
    except Exception as e:  # OSError, safetensors' SafetensorError, torch's RuntimeError
        reason = getattr(e, "strerror", None) or first_line(e)
        raise TrainError(f"could not write {path} ({reason}): free disk space, or pass a path on another disk.") \
            from None
    finally:
        tmp.unlink(missing_ok=True)


def initial_weights(fresh: dict[str, torch.Tensor], weights: Weights) -> tuple[dict[str, torch.Tensor], str]:
    """The canonical weights a fine-tuning run starts from, and a line saying what was taken.

    Every layer comes from `weights`; fc8 is kept from `fresh` (the run's own initialisation) when the
    number of classes differs. Any other difference is refused in one sentence naming the layer.
    """
    start = {}
    for name, tensor in fresh.items():
        theirs = weights.model[name]
        if theirs.shape == tensor.shape:
            start[name] = theirs
        elif name.startswith(FC8):
            start[name] = tensor
        else:
            layer = name.split(".")[0]
            hint = (f"pass --in-channels {weights.in_channels}" if layer == "conv1"
                    else "start from weights of this architecture")
            raise TrainError(f"--init-from {weights.path}: layer {layer} has shape {tuple(theirs.shape)} there but "
                             f"{tuple(tensor.shape)} in this network: {hint}.")
    origin = f"{weights.path}" + (f" (epoch {weights.epoch})" if weights.epoch is not None else "")
    classes = fresh[f"{FC8}.weight"].shape[0]
    if classes != weights.num_classes:
        return start, (f"fine-tuning from {origin}: every layer but fc8, which is drawn afresh for {classes} classes "
                       f"(the weights have {weights.num_classes})")
    return start, f"fine-tuning from {origin}: every layer, fc8 included ({classes} classes)"
