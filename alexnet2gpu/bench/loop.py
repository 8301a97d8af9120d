"""The train-loop row: train.py's own epoch loop (engine.train_one_epoch) on in-memory uint8 batches.

It shows what the loop adds to the bare step of the `merged` row (bf16 on CUDA, as `merged-bf16`): the copy of
each uint8 batch to the device, the mean and PCA colour noise, the progress and loss book-keeping, and
any wait for the host. No files are decoded: the loader is the input-pipeline row's business. The
train-loop-graphs row is the same loop with train.py --cuda-graphs, beside merged-bf16-graphs
(the form train.py takes under a graph).
"""
from __future__ import annotations

import torch

from alexnet2gpu.data.batch import Batch
from alexnet2gpu.data.device_input import InputSpec
from alexnet2gpu.data.folders import IMAGENET_MEAN, CorruptLog
from alexnet2gpu.model.layouts import build_model
from alexnet2gpu.model.stack import StackOptions
from alexnet2gpu.train.cuda_graphs import GRAPH_OPTIONS, GraphedStep
from alexnet2gpu.train.engine import train_one_epoch
from alexnet2gpu.train.optim import make_optimizer

from .measure import INPUT_SIZE

ROW = "train-loop"
GRAPHS_ROW = "train-loop-graphs"
DISTINCT_BATCHES = 2  # cycled, so each step copies a batch from host memory as a real epoch does


def _batches(batch: int, num_classes: int, pin: bool) -> list[Batch]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(DISTINCT_BATCHES):
        images = torch.randint(0, 256, (batch, 3, INPUT_SIZE, INPUT_SIZE), dtype=torch.uint8, generator=gen)
        b = Batch(images, torch.randn(batch, 3, generator=gen) * 0.1,
                  torch.randint(0, num_classes, (batch,), generator=gen), [])
        out.append(b.pin_memory() if pin else b)
    return out


def measure_train_loop(batch: int, device: torch.device, num_classes: int, warmup: int, steps: int,
                       graphs: bool = False) -> float:
    """Seconds per step of train_one_epoch over `steps` in-memory batches, after `warmup` steps (at least the
    CUDA graph's warm-up and capture with `graphs`)."""
    torch.manual_seed(0)
    model = build_model("merged", num_classes, device=device, options=GRAPH_OPTIONS if graphs else StackOptions())
    optimizer = make_optimizer(model, lr=0.01)
    cuda = device.type == "cuda"
    spec = InputSpec(device, torch.tensor(IMAGENET_MEAN), pca="paper", channels_last=cuda,
                     amp="bf16" if cuda else None)
    batches = _batches(batch, num_classes, pin=cuda)
    corrupt = CorruptLog(0, log=lambda *a: None)
    graphed = None
    if graphs:  # as train.py --cuda-graphs
        graphed = GraphedStep(model, batch_size=batch)

    def epoch(n: int):
        loader = (batches[i % len(batches)] for i in range(n))
        return train_one_epoch(model, optimizer, loader, spec, corrupt=corrupt, total_images=n * batch, desc=ROW,
                               show=False, graphed=graphed)

    epoch(max(1, warmup, graphed.warmup + 1 if graphed else 0))
    stats = epoch(steps)
    return stats.seconds / stats.steps


def reference_variant(device: torch.device, graphs: bool = False) -> str:
    """The single-process row whose bare step the loop is compared with."""
    return ("merged-bf16-graphs" if graphs else "merged-bf16") if device.type == "cuda" else "merged"
