"""The single-process variants a benchmark compares: our layouts and train.py's paths, and torchvision's alexnet.

A variant is a recipe (`Variant`) that builds a model on a device; every one of ours starts from the same
canonical weights, so they differ only in how the same network is computed.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
from torch import nn

from alexnet2gpu.model.layouts import build_model
from alexnet2gpu.model.stack import StackOptions
from alexnet2gpu.train.cuda_graphs import GRAPH_OPTIONS

from .measure import alexnet_multiply_adds, count_multiply_adds


@dataclass(frozen=True)
class Variant:
    name: str
    what: str  # one line for the table's legend
    layout: str = "merged"  # "merged", "two-device" or "torchvision"
    channels_last: bool = False  # model and input in channels-last (ours are already, see model.TowerStack)
    compile: bool = False  # torch.compile the whole model
    graphs: bool = False  # the step's forward and backward replayed from a CUDA graph, as train.py --cuda-graphs
    amp: str = ""  # "bf16": autocast to bfloat16 (CUDA rows)
    needs: tuple[str, ...] = field(default=())  # "cuda", "compile": skipped unless available / asked for


# Each row is a way a user runs the network (train.py's paths, torchvision's alexnet as the baseline); the
# alternatives measured against them and removed are in docs/benchmarks.md.
VARIANTS = {v.name: v for v in (
    Variant("merged", "both towers on one device: grouped conv2/4/5, fast per-tower LRN (fused Triton ReLU+LRN "
                      "on CUDA), channels-last (the default)"),
    Variant("two-device", "one process, tower 0 and tower 1 as separate modules (both on the same device "
                          "unless there are two GPUs)", layout="two-device"),
    Variant("torchvision", "torchvision.models.alexnet(weights=None): one tower, no LRN", layout="torchvision"),
    Variant("merged-compile", "merged, torch.compile of the whole model", compile=True, needs=("compile",)),
    Variant("torchvision-compile", "torchvision's alexnet, torch.compile", layout="torchvision", compile=True,
            needs=("compile",)),
    Variant("merged-bf16", "merged, bf16 autocast, channels-last", amp="bf16", channels_last=True, needs=("cuda",)),
    Variant("torchvision-bf16", "torchvision's alexnet, bf16 autocast, channels-last", layout="torchvision",
            amp="bf16", channels_last=True, needs=("cuda",)),
    Variant("merged-bf16-compile", "merged-bf16, torch.compile (the Triton ReLU+LRN and max-pool kept as custom "
            "ops, the rest fused)", amp="bf16", channels_last=True, compile=True, needs=("cuda", "compile")),
    Variant("torchvision-bf16-compile", "torchvision-bf16, torch.compile", layout="torchvision", amp="bf16",
            channels_last=True, compile=True, needs=("cuda", "compile")),
    # The step as train.py --cuda-graphs runs it: forward and backward replayed from one CUDA graph, the merged
    # stack built with cuda_graphs.GRAPH_OPTIONS (conv2/4/5 per tower on dense maps).
    Variant("merged-graphs", "merged, the step's forward and backward replayed from a CUDA graph", graphs=True,
            needs=("cuda",)),
    Variant("two-device-graphs", "two-device with both towers on one GPU, forward and backward from a CUDA graph",
            layout="two-device", graphs=True, needs=("cuda",)),
    Variant("merged-bf16-graphs", "merged-bf16, forward and backward from a CUDA graph (what train.py --amp bf16 "
            "--channels-last --cuda-graphs runs)", amp="bf16", channels_last=True, graphs=True, needs=("cuda",)),
    Variant("torchvision-bf16-graphs", "torchvision-bf16, forward and backward from a CUDA graph",
            layout="torchvision", amp="bf16", channels_last=True, graphs=True, needs=("cuda",)),
)}


def build_variant(variant: Variant, device: torch.device, num_classes: int = 1000) -> nn.Module:
    """The model of `variant` on `device`, from the global RNG's canonical weights (torchvision: its own init)."""
    options = GRAPH_OPTIONS if variant.graphs else StackOptions()
    if variant.layout == "torchvision":
        import torchvision
        model = torchvision.models.alexnet(weights=None, num_classes=num_classes).to(device)
    elif variant.layout == "two-device":
        two_gpus = device.type == "cuda" and torch.cuda.device_count() >= 2 and not variant.graphs  # one graph, one GPU
        devices = ("cuda:0", "cuda:1") if two_gpus else (device, device)
        model = build_model("two-device", num_classes, devices=devices, options=options)
    else:
        model = build_model(variant.layout, num_classes, device=device, options=options)
    if variant.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if variant.compile:
        model = torch.compile(model)
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
