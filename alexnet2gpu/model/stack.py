"""The tower stack: conv1 ... fc7 of one column tower, or of both merged into one set of tensors, stated as the
paper's figure reads (Krizhevsky et al. 2012, Fig. 2), and `StackOptions`, how its layers are computed.

`TowerStack(towers=1)` is a tower of the two-device and tower-parallel layouts; `TowerStack(towers=2)` holds both
towers with grouped convolutions, as caffe's bvlc_alexnet does (the merged layout). Nothing here knows about
processes or devices beyond the one a module sits on.

While torch.fx traces a stack (symbolic tracing: torchvision's feature extraction), each layer takes its
portable form, the one every device runs and a graph can hold: each layer's module called by name, ReLU,
torch's LRN on each tower's maps, F.max_pool2d. The same function to rounding; the choices of `StackOptions`
and of the device (Triton kernels, conv1's forms) are eager-mode speed and are left out of the graph.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from alexnet2gpu.ops.conv import conv1_space_to_depth, conv2d_chunked_weight_grad
from alexnet2gpu.ops.kernels.sizes import POOL_KERNEL, POOL_STRIDE
from alexnet2gpu.ops.lrn import LRN_IMPLS, relu_local_response_norm, runs_triton
from alexnet2gpu.ops.lrn_pool import fuses, relu_lrn_max_pool
from alexnet2gpu.ops.maps import memory_format_of
from alexnet2gpu.ops.pool import overlapping_max_pool

from .layers import LAYERS, LRN_ALPHA, LRN_BETA, LRN_K, LRN_SIZE, Layer, check_dropout, layer_in_features


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
      over 4x4 pixel blocks (ops/conv.py); "auto": space-to-depth on CUDA, direct elsewhere.
    convs: how conv2, conv4 and conv5 (each tower on its own maps) run with both towers in one stack:
      "grouped", one grouped convolution; "towers", one ungrouped convolution per tower on that tower's maps
      as a dense tensor of its own, cut once after conv1's and conv3's blocks and joined again where the towers
      meet (what train.py --cuda-graphs builds: it wins inside a graph and loses eagerly).
    lrn: "auto", the fused Triton ReLU + LRN kernels on CUDA and the chunked LRN elsewhere; "triton" or
      "chunked" forced (the CPU tests interpret the Triton kernels); "formula", the formula in plain tensor
      operations, which exporters and compilers read (ops/lrn.py).
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
    autograd step with one backward kernel (ops/lrn_pool.py). Both pay inside a CUDA graph.

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
        return not is_fx_symbolic_tracing() and "lrn" in layer.lrn_pool and runs_triton(self.options.lrn, h.device)

    def _conv(self, h: torch.Tensor, layer: Layer) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`layer`'s convolution of `h`, and the bias it leaves to the ReLU + LRN kernels (None: added)."""
        conv = getattr(self, layer.name)
        if self._bias_in_lrn(layer, h):
            return F.conv2d(h, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups), conv.bias
        return conv(h), None

    def _lrn_pool(self, h: torch.Tensor, layer: Layer, bias: torch.Tensor | None = None) -> torch.Tensor:
        """ReLU, the LRN and the max-pool as `layer` has them; `bias`: the convolution's, when it ran without it
        (`_bias_in_lrn`)."""
        if is_fx_symbolic_tracing():
            return self._traced_lrn_pool(h, layer)
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

    def _traced_lrn_pool(self, h: torch.Tensor, layer: Layer) -> torch.Tensor:
        """`_lrn_pool` in the portable form a torch.fx graph holds: torch's LRN (alpha / n, as here) on each tower's
        `layer.out` maps, whose count the graph cannot ask of `h`."""
        h = F.relu(h)
        if "lrn" in layer.lrn_pool:
            h = torch.cat([F.local_response_norm(h[:, t * layer.out:(t + 1) * layer.out], LRN_SIZE, LRN_ALPHA,
                                                 LRN_BETA, LRN_K) for t in range(self.towers)], dim=1)
        if "pool" in layer.lrn_pool:
            h = F.max_pool2d(h, POOL_KERNEL, POOL_STRIDE)  # paper §3.4
        return h

    def _block(self, h: torch.Tensor, layer: Layer) -> torch.Tensor:
        """One layer on maps that are all its own: convolution, ReLU, and the LRN and max-pool it has."""
        h, bias = self._conv(h, layer)
        return self._lrn_pool(h, layer, bias)

    def _per_tower(self, h: torch.Tensor, layers: tuple[Layer, ...]) -> torch.Tensor:
        """`layers` (convolutions on own maps) on every tower's maps in `h`: one grouped convolution each, or
        with convs "towers" one dense convolution per tower on its own maps and its rows of each weight, the
        towers' maps cut apart once before and joined again after."""
        if self.options.convs == "grouped" or self.towers == 1 or is_fx_symbolic_tracing():
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
        if is_fx_symbolic_tracing():  # `pad` is a graph node: check_input's, computed as the graph runs
            return self.conv1(F.pad(x, (0, pad, 0, pad))), None
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
        h = h.flatten(1)  # (C, H, W) order, as the canonical fc6 weight expects; fc7's input stays as it is
        return self.dropout(F.relu(getattr(self, name)(h)))
