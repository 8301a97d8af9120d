"""Count the ATen ops one training step dispatches, for merged, two-device and torchvision's alexnet, on the CPU
with the model set up as on CUDA: conv1 as space-to-depth, the Triton LRN and max-pool forced on (interpreted,
their launches made no-ops: only the host's side is counted), channels-last, bf16 autocast. An eager step on a
GPU waits for its host, so what it asks of the dispatcher is part of its time (docs/benchmarks.md).

    python3 tools/step_ops.py            # one line per net: ops a step, then the most frequent ones
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "1"  # before torch and Triton are imported: the Triton paths run on the CPU
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from alexnet2gpu.model.layouts import build_model  # noqa: E402
from alexnet2gpu.model.stack import StackOptions  # noqa: E402


class OpCounter(TorchDispatchMode):
    """Counts every ATen op that reaches the dispatcher below autograd (the backward's included)."""

    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def no_launches() -> None:
    """Triton kernels still go through their Python launch path (argument binding, grid), then do nothing."""
    import triton.runtime.interpreter as interpreter
    interpreter.InterpretedFunction.run = lambda self, *args, **kwargs: None


ON_CUDA = StackOptions(conv1="space-to-depth", lrn="triton")  # what "auto" picks on CUDA, forced on the CPU


def on_cuda(layout: str, **placement) -> torch.nn.Module:
    """The `layout` network as it is built on CUDA, on the CPU."""
    return build_model(layout, 1000, 3, "paper", 0.5, options=ON_CUDA, **placement).to(memory_format=torch.channels_last)


def count(model: torch.nn.Module, batch: int, size: int = 224, classes: int = 1000) -> collections.Counter:
    """The ATen ops of one steady training step of `model` on a batch of `size` x `size` RGB images."""
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (batch,))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()

    step()  # the first step's one-off work (lazy imports, caches) is not the steady step's
    with OpCounter() as counter:
        step()
    return counter.ops


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=2, help="images a step (default %(default)s; the count does not "
                   "depend on it)")
    p.add_argument("--top", type=int, default=8, help="most frequent ops listed per net (default %(default)s)")
    args = p.parse_args(argv)
    no_launches()
    torch.manual_seed(0)
    nets = {"torchvision": torchvision.models.alexnet().to(memory_format=torch.channels_last),
            "merged": on_cuda("merged", device="cpu"), "two-device": on_cuda("two-device", devices=["cpu", "cpu"])}
    for name, model in nets.items():
        ops = count(model, args.batch)
        common = ", ".join(f"{op.removeprefix('aten.')} {n}" for op, n in ops.most_common(args.top))
        print(f"{name:12s} {sum(ops.values()):4d} ATen ops a training step ({common})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
