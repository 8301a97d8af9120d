"""The network with (or without) trained weights, in one call: what hubconf.py's `alexnet` entry and
`alexnet2gpu.load` return; and `alexnet2gpu.transforms`, the evaluation input for those weights.

    net = alexnet2gpu.load("runs/RUN/checkpoints/best.pt").eval()
    torch.hub.load("path/to/alexnet2gpu", "alexnet", source="local", weights="runs/RUN/checkpoints/best.pt")

`weights` is anything `io.load_weights` reads: a train.py checkpoint, a run folder or a .safetensors
file. With weights, the module also carries what using them needs: `classes` (names in label order),
`mean` (per channel, on 0..255, to subtract from the input) and `crop` (224 or 227).
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from alexnet2gpu.model.layers import check_positive
from alexnet2gpu.model.layouts import build_model
from alexnet2gpu.model.stack import StackOptions

from .io import Weights, load_weights

HUB_LAYOUTS = ("merged", "two-device")  # tower-parallel needs one process per tower (torchrun): not a hub model


def load_network(weights=None, num_classes: int | None = None, in_channels: int | None = None,
                 layout: str = "merged", device="cpu", devices=None, init: str = "paper",
                 dropout: float = 0.5, options: StackOptions = StackOptions()) -> nn.Module:
    """AlexNet in `layout` (merged on `device`, or two-device on `devices`), holding `weights` when given,
    else freshly drawn with `init`. num_classes and in_channels default to the weights' (1000 and 3 without);
    when given they must agree with them. `options`: how the layers are computed (model.StackOptions)."""
    if layout not in HUB_LAYOUTS:
        raise ValueError(f"layout {layout!r} cannot be loaded from the hub: choose one of {', '.join(HUB_LAYOUTS)} "
                         "(the tower-parallel layout runs under torchrun: train.py --resume or --init-from).")
    for name, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if value is not None:  # None: the weights' or the default; 0 must not mean the default
            check_positive(name, value)
    loaded = weights if isinstance(weights, Weights) else (load_weights(weights) if weights is not None else None)
    if loaded is not None:
        for name, wanted, have in (("num_classes", num_classes, loaded.num_classes),
                                   ("in_channels", in_channels, loaded.in_channels)):
            if wanted is not None and wanted != have:
                raise ValueError(f"{name}={wanted} but the weights in {loaded.path} have {name}={have}: leave "
                                 f"{name} out, or fine-tune them to {wanted} with train.py --init-from.")
        num_classes, in_channels = loaded.num_classes, loaded.in_channels
    model = build_model(layout, num_classes or 1000, in_channels or 3, init, dropout, device=device, devices=devices,
                        options=options)
    if loaded is not None:
        model.load_state_dict(loaded.model)
        model.classes, model.mean, model.crop = loaded.classes, loaded.mean, loaded.crop
    return model


load = load_network  # alexnet2gpu.load: torchvision's and timm's users look for a loader at the top level


def transforms(weights):
    """The evaluation input for `weights` (data.preprocess.EvalTransform: shorter side to 256, the centre
    256x256, the centre crop, minus the mean): `weights` is a network from `load` or torch.hub, a `Weights`,
    or anything `io.load_weights` reads. A network without weights carries no mean: build
    EvalTransform(mean, crop) with the numbers instead."""
    from alexnet2gpu.data.preprocess import EvalTransform  # data/ and torchvision's v2 only when asked for

    if isinstance(weights, (str, Path)):
        weights = load_weights(weights)
    mean, crop = getattr(weights, "mean", None), getattr(weights, "crop", None)
    if mean is None or crop is None:
        what = (f"the weights in {weights.path} carry" if isinstance(weights, Weights)
                else f"this {type(weights).__name__} carries")
        raise ValueError(f"{what} no training mean: load the network with its weights, alexnet2gpu.load(WEIGHTS), or "
                         "pass the numbers to alexnet2gpu.data.preprocess.EvalTransform(mean, crop).")
    return EvalTransform(list(mean), crop)
