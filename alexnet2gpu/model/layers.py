"""The network, stated once: the layer table, initialisation schemes, canonical weights, the tower stack.

Two column towers (Krizhevsky et al. 2012, Fig. 2; docs/paper.md §1). `TowerStack` holds the layers of
one tower (`towers=1`, a tower of the two-device and tower-parallel layouts) or of both towers merged into
one set of tensors (`towers=2`, grouped convolutions as in caffe's bvlc_alexnet). The layouts that hold
the stacks live in layouts/: merged.py (the numerical oracle), two_device.py, tower_parallel.py.

Nothing here knows about processes or devices beyond the one a module sits on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from alexnet2gpu.ops.conv import conv1_space_to_depth, conv2d_chunked_weight_grad
from alexnet2gpu.ops.lrn import LRN_IMPLS, relu_local_response_norm, runs_triton
from alexnet2gpu.ops.lrn_pool import fuses, relu_lrn_max_pool
from alexnet2gpu.ops.maps import memory_format_of
from alexnet2gpu.ops.pool import overlapping_max_pool

TOWERS = 2  # the paper's two GPUs

# LRN constants (paper §3.3: k=2, n=5, alpha=1e-4, beta=0.75). The original code divides alpha by n
# (cuda-convnet2 layer.py `scale /= size`), as torch.nn.LocalResponseNorm does: docs/paper.md §2.
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 2.0

# Input geometry (docs/paper.md §3): 224 crops are padded right/bottom by 3 like the original code's rounding,
# 227 crops (caffe) need nothing; both give 55x55 after conv1.
INPUT_PAD = {224: 3, 227: 0}


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
        hint = (f"x.to({weight.dtype}) after subtracting the mean (data.to_model_input)" if not x.is_floating_point()
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


def conv1_input(x: torch.Tensor, pad: int, weight: torch.Tensor) -> torch.Tensor:
    """`x` zero-padded by `pad` on the right and bottom (docs/paper.md §3), in the memory layout of `weight`,
    in one pass over the image."""
    layout = memory_format_of(weight)
    if not pad:
        return x.contiguous(memory_format=layout)
    n, c, h, w = x.shape
    out = torch.empty(n, c, h + pad, w + pad, dtype=x.dtype, device=x.device, memory_format=layout)
    out[:, :, h:].zero_()
    out[:, :, :h, w:].zero_()
    out[:, :, :h, :w] = x
    return out


CONV1_FORMS = ("auto", "direct", "space-to-depth")
CONV_FORMS = ("grouped", "towers")


@dataclass(frozen=True)
class StackOptions:
    """How a `TowerStack` computes its layers, fixed when it is built; never what it computes (the parameters
    are the canonical ones, and every choice gives the same numbers to rounding). Which choice runs where, and
    the measurements behind the defaults: docs/kernels.md.

    conv1: "direct", the one 11x11 stride-4 convolution; "space-to-depth", the same convolution as a 3x3 one
      over 4x4 pixel blocks (conv.py); "auto": space-to-depth on CUDA, direct elsewhere.
    convs: how conv2, conv4 and conv5 (each tower on its own maps) run with both towers in one stack:
      "grouped", one grouped convolution; "towers", one ungrouped convolution per tower on that tower's maps
      as a dense tensor of its own, cut once after conv1's and conv3's blocks and joined again where the towers
      meet (what train.py --cuda-graphs builds: it wins inside a graph and loses eagerly).
    lrn: "auto", the fused Triton ReLU + LRN kernels on CUDA and the chunked LRN elsewhere; "triton" or
      "chunked" forced (the CPU tests interpret the Triton kernels); "formula", the formula in plain tensor
      operations, which exporters and compilers read (lrn.py).
    """

    conv1: str = "auto"
    convs: str = "grouped"
    lrn: str = "auto"

    def __post_init__(self):
        for name, value, choices in (("conv1", self.conv1, CONV1_FORMS), ("convs", self.convs, CONV_FORMS),
                                     ("lrn", self.lrn, LRN_IMPLS)):
            if value not in choices:
                raise ValueError(f"unknown {name} form {value!r}: choose one of {', '.join(choices)}.")


class TowerStack(nn.Module):
    """conv1 ... fc7 of `towers` column towers: one tower (towers=1) or both merged (towers=2).

    With towers=2, conv2/conv4/conv5 are grouped convolutions: PyTorch maps input channels [0, C/2) to
    output channels [0, O/2), and that half is tower 0. LRN runs per tower (docs/paper.md §2). The forward is
    cut into stages at the layers that read both towers; a layout gathers the towers' maps between stages.
    `options` (StackOptions) fixes how each layer is computed.

    Where the Triton ReLU + LRN runs, conv1 and conv2 run without their bias and the LRN's kernels add it as
    they read the maps; where the Triton max-pool runs too, on channels-last maps, ReLU + LRN + max-pool is one
    autograd step with one backward kernel (lrn_pool_op.py). Both pay inside a CUDA graph.

    Memory layout: the convolution weights are channels-last (N x H x W x C in memory; shapes and the
    canonical state dict unchanged), and the input is brought into the layout of conv1's weight, so every
    map of the stack is channels-last: on the CPU oneDNN then runs the convolutions without reordering, and
    max pooling and the LRN read channels contiguously (docs/benchmarks.md).
    `stack.to(memory_format=torch.contiguous_format)` gives the contiguous layout back; the input follows it.
    """

    def __init__(self, towers: int, in_channels: int = 3, dropout: float = 0.5,
                 options: StackOptions = StackOptions()):
        super().__init__()
        check_dropout(dropout)
        self.towers, self.options = towers, options
        for layer in LAYERS:
            fan_in = layer_in_features(layer, in_channels)
            out = layer.out * towers
            if layer.kernel:
                groups = 1 if layer.cross else towers
                module = nn.Conv2d(fan_in * groups, out, layer.kernel, layer.stride, layer.pad, groups=groups)
            else:
                module = nn.Linear(fan_in, out)
            setattr(self, layer.name, module)
        self.dropout = nn.Dropout(dropout)
        self.to(memory_format=torch.channels_last)  # conv weights only (4-d); works on the meta device too

    def extra_repr(self) -> str:
        return f"towers={self.towers}, options={self.options}"

    def _bias_in_lrn(self, layer: Layer, h: torch.Tensor) -> bool:
        """Whether `layer`'s bias is added by the fused ReLU + LRN kernels rather than by its convolution: one
        pass fewer over conv1's and conv2's outputs each way."""
        return "lrn" in layer.lrn_pool and runs_triton(self.options.lrn, h.device)

    def _conv(self, h: torch.Tensor, layer: Layer) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`layer`'s convolution of `h`, and the bias it leaves to the ReLU + LRN kernels (None: added)."""
        conv = getattr(self, layer.name)
        if self._bias_in_lrn(layer, h):
            return F.conv2d(h, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups), conv.bias
        return conv(h), None

    def _lrn_pool(self, h: torch.Tensor, layer: Layer, bias: torch.Tensor | None = None) -> torch.Tensor:
        """ReLU, the LRN and the max-pool as `layer` has them; `bias`: the convolution's, when it ran without it
        (`_bias_in_lrn`)."""
        if layer.lrn_pool == "lrn+pool" and fuses(h, self.options.lrn):
            return relu_lrn_max_pool(h, h.shape[1] // layer.out, LRN_ALPHA, LRN_BETA, LRN_K, bias)
        if "lrn" in layer.lrn_pool:  # per tower: h holds layer.out maps of each tower (of one, with "towers")
            h = relu_local_response_norm(h, h.shape[1] // layer.out, LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K,
                                         self.options.lrn, bias)
        else:  # in place: a convolution's backward does not need its output, so ReLU may overwrite it
            h = F.relu(h, inplace=True)
        if "pool" in layer.lrn_pool:
            h = overlapping_max_pool(h)  # paper §3.4
        return h

    def _block(self, h: torch.Tensor, layer: Layer) -> torch.Tensor:
        """One layer on maps that are all its own: convolution, ReLU, and the LRN and max-pool it has."""
        h, bias = self._conv(h, layer)
        return self._lrn_pool(h, layer, bias)

    def _per_tower(self, h: torch.Tensor, layers: tuple[Layer, ...]) -> torch.Tensor:
        """`layers` (convolutions on own maps) on every tower's maps in `h`: one grouped convolution each, or
        with convs "towers" one dense convolution per tower on its own maps and its rows of each weight, the
        towers' maps cut apart once before and joined again after."""
        if self.options.convs == "grouped" or self.towers == 1:
            for layer in layers:
                h = self._block(h, layer)
            return h
        maps = [t.contiguous(memory_format=memory_format_of(h)) for t in h.chunk(self.towers, 1)]
        for layer in layers:
            conv = getattr(self, layer.name)
            in_lrn = self._bias_in_lrn(layer, h)
            rows = zip(maps, conv.weight.chunk(self.towers), conv.bias.chunk(self.towers))
            maps = [self._lrn_pool(F.conv2d(x, w, None if in_lrn else b, conv.stride, conv.padding), layer,
                                   b if in_lrn else None) for x, w, b in rows]
        return torch.cat(maps, dim=1)

    def _conv1(self, x: torch.Tensor, pad: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """conv1 of the image `x` (right/bottom zero padding `pad`), and the bias it leaves to the LRN."""
        form = self.options.conv1
        if form == "auto":  # space-to-depth was faster on an H100, direct on the CPU (docs/kernels.md)
            form = "space-to-depth" if x.is_cuda else "direct"
        in_lrn = self._bias_in_lrn(LAYERS[0], x)
        if form == "space-to-depth":
            h = conv1_space_to_depth(x, pad, self.conv1, with_bias=not in_lrn)
        else:
            h = conv2d_chunked_weight_grad(conv1_input(x, pad, self.conv1.weight), self.conv1, with_bias=not in_lrn)
        return h, self.conv1.bias if in_lrn else None

    def features(self, x: torch.Tensor, pad: int) -> torch.Tensor:
        """conv1 and conv2 blocks: each tower reads the image and then only its own maps. -> N x 128t x 13 x 13"""
        h, bias = self._conv1(x, pad)
        return self._per_tower(self._lrn_pool(h, LAYERS[0], bias), LAYERS[1:2])

    def conv_cross(self, h: torch.Tensor) -> torch.Tensor:
        """conv3 (reads both towers) then conv4, conv5 on own maps. -> N x 128t x 6 x 6"""
        return self._per_tower(self._block(h, LAYERS[2]), LAYERS[3:5])

    def fully_connected(self, h: torch.Tensor, name: str) -> torch.Tensor:
        """fc6 or fc7 (both read both towers), ReLU, dropout on the outputs (paper §4.2). -> N x 2048t"""
        h = h.flatten(1) if h.dim() > 2 else h  # (C, H, W) order, as the canonical fc6 weight expects
        return self.dropout(F.relu(getattr(self, name)(h)))


def multiply_adds(num_classes: int = 1000, in_channels: int = 3) -> dict[str, int]:
    """Forward multiply-adds per image for each layer at 224/227 input, from the layer table (docs/paper.md §1)."""
    sizes = {"conv1": 55, "conv2": 27, "conv3": 13, "conv4": 13, "conv5": 13}
    macs = {}
    for name, shape in canonical_shapes(num_classes, in_channels).items():
        if name.endswith(".weight"):
            layer = name.split(".")[0]
            macs[layer] = math.prod(shape) * sizes.get(layer, 1) ** 2
    return macs
