"""The single-process variants a benchmark compares: our layouts, internal alternatives, torchvision's alexnet.

A variant is a recipe (`Variant`) that builds a model on a device; every one of ours starts from the same
canonical weights, so they differ only in how the same network is computed.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
from torch import nn

from ..layouts import build_model
from ..model import TowerStack
from .measure import alexnet_multiply_adds, count_multiply_adds


@dataclass(frozen=True)
class Variant:
    name: str
    what: str  # one line for the table's legend
    layout: str = "merged"  # "merged", "two-device" or "torchvision"
    lrn_impl: str = "fast"
    conv1_impl: str = "auto"  # space-to-depth on CUDA, direct elsewhere (model.TowerStack)
    conv_impl: str = "grouped"
    pool_impl: str = "fast"
    bias_in_lrn: bool = True  # conv1's and conv2's biases added by the fused ReLU + LRN kernels (model.TowerStack)
    fuse_lrn_pool: bool = True  # ReLU + LRN + max-pool as one step with one backward kernel (model.TowerStack)
    channels_last: bool = False  # model and input in channels-last (ours are already, see model.TowerStack)
    contiguous: bool = False  # our stack back in the contiguous N x C x H x W layout
    compile: bool = False  # torch.compile the whole model
    compile_mode: str | None = None  # torch.compile's mode: "reduce-overhead" replays CUDA graphs
    graphs: bool = False  # the step's forward and backward replayed from a CUDA graph (train.py --cuda-graphs)
    amp: str = ""  # "bf16": autocast to bfloat16 (CUDA rows)
    needs: tuple[str, ...] = field(default=())  # "cuda", "compile": skipped unless available / asked for


VARIANTS = {v.name: v for v in (
    Variant("merged", "both towers on one device: grouped conv2/4/5, fast per-tower LRN (fused Triton ReLU+LRN "
                      "on CUDA), channels-last (the default)"),
    Variant("two-device", "one process, tower 0 and tower 1 as separate modules (both on the same device "
                          "unless there are two GPUs)", layout="two-device"),
    Variant("torchvision", "torchvision.models.alexnet(weights=None): one tower, no LRN", layout="torchvision"),
    Variant("merged-native-lrn", "merged, LRN by torch.nn.functional.local_response_norm", lrn_impl="native"),
    Variant("merged-split-conv", "merged, conv2/4/5 as one convolution per tower + concatenate", conv_impl="split"),
    Variant("merged-towers", "merged, every conv as one convolution per tower, each tower's maps a dense tensor "
                             "of its own up to where the towers meet", conv_impl="towers"),
    Variant("merged-contiguous", "merged in the contiguous N x C x H x W layout", contiguous=True),
    Variant("merged-s2d", "merged, conv1 as a 3x3 convolution over 4x4 pixel blocks (48 maps; the default on CUDA)",
            conv1_impl="space-to-depth"),
    Variant("merged-direct", "merged, conv1 as the one 11x11 convolution (the default on the CPU)",
            conv1_impl="direct"),
    Variant("merged-compiled-lrn", "merged, LRN by torch.compile of the native composite", lrn_impl="compiled",
            needs=("compile",)),
    Variant("merged-compile", "merged, torch.compile of the whole model", compile=True, needs=("compile",)),
    Variant("torchvision-compile", "torchvision's alexnet, torch.compile", layout="torchvision", compile=True,
            needs=("compile",)),
    Variant("merged-bf16", "merged, bf16 autocast, channels-last", amp="bf16", channels_last=True, needs=("cuda",)),
    Variant("merged-bf16-split", "merged-bf16 with conv2/4/5 as one convolution per tower", amp="bf16",
            channels_last=True, conv_impl="split", needs=("cuda",)),
    Variant("merged-bf16-towers", "merged-bf16 with every conv as one convolution per tower on its own dense maps",
            amp="bf16", channels_last=True, conv_impl="towers", needs=("cuda",)),
    Variant("merged-bf16-direct", "merged-bf16, conv1 as the one 11x11 convolution", amp="bf16",
            channels_last=True, conv1_impl="direct", needs=("cuda",)),
    Variant("merged-bf16-contiguous", "merged-bf16 in the contiguous N x C x H x W layout", amp="bf16",
            contiguous=True, needs=("cuda",)),
    Variant("merged-bf16-aten-pool", "merged-bf16 with ATen's max-pool kernels instead of the Triton ones",
            amp="bf16", channels_last=True, pool_impl="aten", needs=("cuda",)),
    Variant("merged-bf16-bias-apart", "merged-bf16 with conv1's and conv2's biases added by the convolutions, not "
            "by the ReLU + LRN kernels", amp="bf16", channels_last=True, bias_in_lrn=False, needs=("cuda",)),
    Variant("merged-bf16-lrn-pool-apart", "merged-bf16 with the ReLU + LRN and the max-pool after it as two steps, "
            "each with its own backward kernel", amp="bf16", channels_last=True, fuse_lrn_pool=False,
            needs=("cuda",)),
    Variant("merged-bf16-apart", "merged-bf16 with both of the above: biases by the convolutions, ReLU + LRN and "
            "max-pool as two steps", amp="bf16", channels_last=True, bias_in_lrn=False, fuse_lrn_pool=False,
            needs=("cuda",)),
    Variant("merged-bf16-chunked-lrn", "merged-bf16 with the CPU's chunked LRN instead of the Triton kernels",
            amp="bf16", channels_last=True, lrn_impl="chunked", needs=("cuda",)),
    Variant("torchvision-bf16", "torchvision's alexnet, bf16 autocast, channels-last", layout="torchvision",
            amp="bf16", channels_last=True, needs=("cuda",)),
    Variant("merged-bf16-compile", "merged-bf16, torch.compile (the Triton ReLU+LRN and ATen's max-pool kept as "
            "custom ops, the rest fused)", amp="bf16", channels_last=True, compile=True, needs=("cuda", "compile")),
    Variant("merged-bf16-compile-shifted-lrn", "merged-bf16-compile with the LRN as the plain formula for the "
            "compiler to fuse", amp="bf16", channels_last=True, compile=True, lrn_impl="shifted",
            needs=("cuda", "compile")),
    Variant("torchvision-bf16-compile", "torchvision-bf16, torch.compile", layout="torchvision", amp="bf16",
            channels_last=True, compile=True, needs=("cuda", "compile")),
    # An eager bf16 step of ours launches more kernels than the GPU needs time for (docs/BENCHMARKS.md): the
    # step as train.py --cuda-graphs runs it, forward and backward replayed from one CUDA graph.
    Variant("merged-graphs", "merged, the step's forward and backward replayed from a CUDA graph", graphs=True,
            needs=("cuda",)),
    Variant("two-device-graphs", "two-device with both towers on one GPU, forward and backward from a CUDA graph",
            layout="two-device", graphs=True, needs=("cuda",)),
    Variant("merged-bf16-graphs", "merged-bf16, forward and backward from a CUDA graph", amp="bf16",
            channels_last=True, graphs=True, needs=("cuda",)),
    Variant("merged-bf16-direct-graphs", "merged-bf16-direct, forward and backward from a CUDA graph", amp="bf16",
            channels_last=True, conv1_impl="direct", graphs=True, needs=("cuda",)),
    Variant("merged-bf16-towers-graphs", "merged-bf16-towers, forward and backward from a CUDA graph", amp="bf16",
            channels_last=True, conv_impl="towers", graphs=True, needs=("cuda",)),
    Variant("merged-bf16-towers-graphs-bias-apart", "merged-bf16-towers-graphs with the biases added by the "
            "convolutions, not by the ReLU + LRN kernels", amp="bf16", channels_last=True, conv_impl="towers",
            bias_in_lrn=False, graphs=True, needs=("cuda",)),
    Variant("merged-bf16-towers-graphs-lrn-pool-apart", "merged-bf16-towers-graphs with the ReLU + LRN and the "
            "max-pool as two steps", amp="bf16", channels_last=True, conv_impl="towers", fuse_lrn_pool=False,
            graphs=True, needs=("cuda",)),
    Variant("torchvision-bf16-graphs", "torchvision-bf16, forward and backward from a CUDA graph",
            layout="torchvision", amp="bf16", channels_last=True, graphs=True, needs=("cuda",)),
    # The same with torch.compile's own CUDA graphs.
    Variant("merged-bf16-compile-graphs", "merged-bf16-compile with CUDA graphs (mode reduce-overhead)", amp="bf16",
            channels_last=True, compile=True, compile_mode="reduce-overhead", needs=("cuda", "compile")),
    Variant("torchvision-bf16-compile-graphs", "torchvision-bf16-compile with CUDA graphs (mode reduce-overhead)",
            layout="torchvision", amp="bf16", channels_last=True, compile=True, compile_mode="reduce-overhead",
            needs=("cuda", "compile")),
)}



def build_variant(variant: Variant, device: torch.device, num_classes: int = 1000) -> nn.Module:
    """The model of `variant` on `device`, from the global RNG's canonical weights (torchvision: its own init)."""
    if variant.layout == "torchvision":
        import torchvision
        model = torchvision.models.alexnet(weights=None, num_classes=num_classes).to(device)
    elif variant.layout == "two-device":
        two_gpus = device.type == "cuda" and torch.cuda.device_count() >= 2 and not variant.graphs  # one graph, one GPU
        devices = ("cuda:0", "cuda:1") if two_gpus else (device, device)
        model = build_model("two-device", num_classes, devices=devices)
    else:
        model = build_model(variant.layout, num_classes, device=device)
    for module in model.modules():
        if isinstance(module, TowerStack):
            module.lrn_impl, module.conv_impl = variant.lrn_impl, variant.conv_impl
            module.conv1_impl = variant.conv1_impl
            module.pool_impl, module.bias_in_lrn = variant.pool_impl, variant.bias_in_lrn
            module.fuse_lrn_pool = variant.fuse_lrn_pool
    if variant.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if variant.contiguous:
        model = model.to(memory_format=torch.contiguous_format)
    if variant.compile:
        model = torch.compile(model, mode=variant.compile_mode)
    return model


@functools.lru_cache(maxsize=None)
def variant_multiply_adds(variant: Variant, num_classes: int = 1000) -> int:
    """Forward multiply-adds per image: ours from the layer table, torchvision's counted with hooks."""
    if variant.layout == "torchvision":
        import torchvision
        return count_multiply_adds(torchvision.models.alexnet(weights=None, num_classes=num_classes))
    return alexnet_multiply_adds(num_classes)


def available(variant: Variant, device: torch.device, allow_compile: bool) -> str:
    """Why `variant` cannot run here ("" when it can)."""
    if "cuda" in variant.needs and device.type != "cuda":
        return "needs a CUDA device"
    if "compile" in variant.needs and not allow_compile:
        return "needs --compile (torch.compile takes minutes on a small CPU)" if device.type == "cpu" else \
            "left out by --no-compile"
    return ""
