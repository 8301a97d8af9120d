"""The network, stated once as data: the layer table, its constants, initialisation schemes, canonical weights,
and the checks of a model's arguments, weights and input.

Two column towers (Krizhevsky et al. 2012, Fig. 2; docs/paper.md §1). stack.py builds the layers of one tower
or of both merged from this table; the layouts that hold the stacks live in layouts/: merged.py (the numerical
oracle), two_device.py, tower_parallel.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

TOWERS = 2  # the paper's two GPUs

# LRN constants (paper §3.3: k=2, n=5, alpha=1e-4, beta=0.75). The original code divides alpha by n
# (cuda-convnet2 layer.py `scale /= size`), as torch.nn.LocalResponseNorm does: docs/paper.md §2.
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 2.0

# Input geometry (docs/paper.md §3): 224 crops are padded right/bottom by 3 like the original code's rounding,
# 227 crops (caffe) need nothing; both give 55x55 after conv1.
INPUT_PAD = {224: 3, 227: 0}
CROPS = tuple(INPUT_PAD)  # the crop sizes the network takes: the paper's, caffe's


@dataclass(frozen=True)
class Layer:
    """One row of the layer table (docs/paper.md §1); widths are per tower."""

    name: str
    out: int  # maps or units per tower (fc8: the whole layer, held by tower 0)
    cross: bool  # reads both towers' maps (conv3, fc6, fc7, fc8) rather than its own (conv2, conv4, conv5)
    kernel: int = 0  # 0 for fully connected layers
    stride: int = 1
    pad: int = 0
    bias: float = 0.0  # the paper's bias init (§5): 1 in conv2, conv4, conv5, fc6, fc7
    lrn_pool: str = ""  # what follows the ReLU: "lrn+pool", "pool" or ""


LAYERS = (
    Layer("conv1", 48, cross=True, kernel=11, stride=4, lrn_pool="lrn+pool"),  # reads the image
    Layer("conv2", 128, cross=False, kernel=5, pad=2, bias=1.0, lrn_pool="lrn+pool"),
    Layer("conv3", 192, cross=True, kernel=3, pad=1),
    Layer("conv4", 192, cross=False, kernel=3, pad=1, bias=1.0),
    Layer("conv5", 128, cross=False, kernel=3, pad=1, bias=1.0, lrn_pool="pool"),
    Layer("fc6", 2048, cross=True, bias=1.0),
    Layer("fc7", 2048, cross=True, bias=1.0),
)
FC8 = "fc8"  # one 4096 -> num_classes layer on GPU 0 (cuda-convnet2 layers-imagenet-2gpu-model.cfg: gpu=0)
POOL5_SIZE = 6  # 6x6 maps after the last pooling at 224/227 input
LAYER_NAMES = tuple(layer.name for layer in LAYERS) + (FC8,)


def layer_in_features(layer: Layer, in_channels: int) -> int:
    """Input maps (or units) one tower's slice of `layer` reads, all towers' maps where it is a cross layer."""
    if layer.name == "conv1":
        return in_channels
    prev = LAYERS[[l.name for l in LAYERS].index(layer.name) - 1]
    per_tower = prev.out * (POOL5_SIZE * POOL5_SIZE if layer.name == "fc6" else 1)
    return per_tower * (TOWERS if layer.cross else 1)


def canonical_shapes(num_classes: int = 1000, in_channels: int = 3) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the canonical state dict: the merged, caffe-shaped tensors."""
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in LAYERS:
        rows = layer.out * TOWERS
        fan_in = layer_in_features(layer, in_channels)
        kernel = (layer.kernel, layer.kernel) if layer.kernel else ()
        shapes[f"{layer.name}.weight"] = (rows, fan_in) + kernel
        shapes[f"{layer.name}.bias"] = (rows,)
    shapes["fc8.weight"] = (num_classes, LAYERS[-1].out * TOWERS)
    shapes["fc8.bias"] = (num_classes,)
    return shapes


# Why two schemes: `paper` is §5 of the paper verbatim. Its biases of 1 are known to leave the loss flat at
# ln(1000) for a long time, so caffe's bvlc_alexnet moved to biases of 0.1 and std 0.005 for fc6/fc7
# ("initialization to 1 gave flat loss"); `caffe` is that fix, kept as an option, never silently.
INIT_SCHEMES = {
    "paper": dict(std=0.01, fc_std=0.01, bias=1.0),
    "caffe": dict(std=0.01, fc_std=0.005, bias=0.1),
}


def check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        example = {"num_classes": 1000, "in_channels": 3}.get(name, 1)
        raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}: pass e.g. {name}={example}.")


def check_dropout(p: float) -> None:
    if not isinstance(p, (int, float)) or not 0 <= p <= 1:  # NaN fails both comparisons
        raise ValueError(f"dropout is a probability from 0 to 1, got {p!r}: pass e.g. dropout=0.5 (the paper's).")


def check_init(init: str) -> None:
    if init not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {init!r}: choose one of {', '.join(INIT_SCHEMES)}.")


def check_arguments(num_classes: int, in_channels: int, init: str) -> None:
    """The constructor arguments every layout shares, each refused in one sentence."""
    check_positive("num_classes", num_classes)
    check_positive("in_channels", in_channels)
    check_init(init)


def init_weights(num_classes: int = 1000, in_channels: int = 3, init: str = "paper") -> dict[str, torch.Tensor]:
    """Canonical weights drawn from the global RNG on the CPU, so every layout starts identical for a seed."""
    check_init(init)
    scheme = INIT_SCHEMES[init]
    weights = {}
    for name, shape in canonical_shapes(num_classes, in_channels).items():
        layer, kind = name.split(".")
        if kind == "weight":
            std = scheme["fc_std"] if layer in ("fc6", "fc7") else scheme["std"]
            weights[name] = torch.randn(shape) * std
        else:
            paper_bias = next((l.bias for l in LAYERS if l.name == layer), 0.0)
            weights[name] = torch.full(shape, scheme["bias"] if paper_bias else 0.0)
    return weights


def check_state_dict(state: dict, num_classes: int, in_channels: int) -> None:
    """Refuse a state dict that is not this architecture's canonical one, in one sentence."""
    shapes = canonical_shapes(num_classes, in_channels)
    missing = [k for k in shapes if k not in state]
    unexpected = [k for k in state if k not in shapes]
    if missing or unexpected:
        hint = ""
        if any(k.startswith("module.") for k in unexpected):
            hint = " (strip the 'module.' prefix of a DataParallel/DDP state dict)"
        raise ValueError(
            "state dict is not a canonical alexnet2gpu one: "
            f"missing {missing[:4] or 'nothing'}, unexpected {unexpected[:4] or 'nothing'}{hint}; "
            "load a checkpoint written by alexnet2gpu, or convert it to the names conv1.weight ... fc8.bias."
        )
    for key, shape in shapes.items():
        got = tuple(state[key].shape)
        if got != shape:
            raise ValueError(
                f"state dict entry {key} has shape {got} but this model needs {shape}: "
                f"build the model with the num_classes and in_channels the checkpoint was trained with."
            )


def check_input(x: torch.Tensor, in_channels: int, weight: torch.Tensor | None = None, moved: bool = False) -> int:
    """Return the right/bottom zero padding conv1 needs for `x`, or raise a clear error. With conv1's
    `weight`: `x` must have its dtype (any float under autocast) and, unless the layout moves the input
    itself (`moved`), be on its device."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"AlexNet takes a torch.Tensor, got {type(x).__module__}.{type(x).__name__}: convert it "
                         "with torch.as_tensor(x).")
    if weight is not None and x.dtype != weight.dtype and not (
            x.is_floating_point() and torch.is_autocast_enabled(weight.device.type)):
        hint = (f"x.to({weight.dtype}) after subtracting the mean (to_model_input)" if not x.is_floating_point()
                else f"x.to({weight.dtype})" + (", or run under torch.autocast" if x.element_size() == 2 else ""))
        raise ValueError(f"AlexNet's weights are {weight.dtype} and the input is {x.dtype}: pass {hint}.")
    if weight is not None and not moved and x.device != weight.device:
        raise ValueError(f"the input is on {x.device} and the model on {weight.device}: move the input with "
                         f"x.to('{weight.device}').")
    if x.dim() != 4 or x.shape[1] != in_channels or x.shape[2] != x.shape[3] or x.shape[2] not in INPUT_PAD:
        got = " x ".join(str(s) for s in x.shape)
        raise ValueError(
            f"AlexNet expects input N x {in_channels} x 224 x 224 (paper) or N x {in_channels} x 227 x 227 "
            f"(caffe), got {got}: crop or resize the images to 224 (or 227)."
        )
    return INPUT_PAD[x.shape[2]]


def multiply_adds(num_classes: int = 1000, in_channels: int = 3) -> dict[str, int]:
    """Forward multiply-adds per image for each layer at 224/227 input, from the layer table (docs/paper.md §1)."""
    sizes = {"conv1": 55, "conv2": 27, "conv3": 13, "conv4": 13, "conv5": 13}
    macs = {}
    for name, shape in canonical_shapes(num_classes, in_channels).items():
        if name.endswith(".weight"):
            layer = name.split(".")[0]
            macs[layer] = math.prod(shape) * sizes.get(layer, 1) ** 2
    return macs
