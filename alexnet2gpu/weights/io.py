"""Trained weights in and out: the one loader of weights (a train.py checkpoint, a run folder or a
.safetensors file), the .safetensors writer, and the initial weights of a fine-tuning run.

Everything that takes weights (train.py --init-from and --evaluate, hubconf.py, the predict and export
commands) reads them with `load_weights`, so each accepts every format. A .safetensors file holds the
canonical weights (model.canonical_shapes) and, as string metadata, what is needed to use them: the class
names, the per-channel mean, the crop size, num_classes, in_channels and the training config.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from alexnet2gpu.errors import TrainError
from alexnet2gpu.model.layers import FC8, check_state_dict
from alexnet2gpu.optional import require

from . import checkpoint as ckpt

SAFETENSORS = ".safetensors"
WEIGHTS_FORMAT = "alexnet2gpu-weights-v1"


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
    """The weights of a .safetensors file, a train.py checkpoint (.pt) or a run folder's latest checkpoint."""
    path = Path(path)
    if path.suffix == SAFETENSORS:
        return _read_safetensors(path)
    state = ckpt.load_checkpoint(path)
    config = dict(state.get("config") or {})
    return Weights(state["model"], state["path"], state.get("classes"), state.get("mean"), config.get("crop", 224),
                   state.get("epoch"), config)


def _read_safetensors(path: Path) -> Weights:
    if not path.is_file():
        raise TrainError(f"weights file {path} does not exist: pass a .safetensors file written by "
                         "python -m alexnet2gpu.export, a train.py checkpoint or a run folder.")
    st = require("safetensors.torch", f"reading {path.name}")
    try:
        tensors = st.load_file(str(path))
        with require("safetensors", f"reading {path.name}").safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise TrainError(f"weights file {path} could not be read ({str(e).splitlines()[0][:120]}): it is truncated "
                         "or not a safetensors file; export it again.") from None
    try:
        num_classes, in_channels = tensors[f"{FC8}.weight"].shape[0], tensors["conv1.weight"].shape[1]
        check_state_dict(tensors, num_classes, in_channels)
    except (KeyError, ValueError) as e:
        raise TrainError(f"{path} does not hold alexnet2gpu weights ({e}).") from None

    def field_(name, default=None):
        return json.loads(meta[name]) if name in meta else default

    return Weights(tensors, str(path), field_("classes"), field_("mean"), field_("crop", 224), field_("epoch"),
                   field_("config", {}))


def save_safetensors(weights: Weights, path) -> Path:
    """Write the canonical weights with their metadata (JSON strings), to a temporary file then renamed."""
    st = require("safetensors.torch", "writing .safetensors")
    path = Path(path)
    meta = dict(format=WEIGHTS_FORMAT, num_classes=weights.num_classes, in_channels=weights.in_channels,
                crop=weights.crop, classes=weights.classes, mean=weights.mean, epoch=weights.epoch,
                config=weights.config)
    tensors = {k: v.detach().cpu().contiguous() for k, v in weights.model.items()}
    tmp = path.with_name(path.name + ".tmp")
    try:
        st.save_file(tensors, str(tmp), metadata={k: json.dumps(v) for k, v in meta.items()})
        os.chmod(tmp, 0o644)  # as torch.save's files (the writer makes them private)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


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
