"""Time AlexNet's five convolutions alone on CUDA, forward and forward + backward, in the forms the merged layout
can run them: one grouped convolution (`grouped`) and one per tower on dense per-tower maps (`towers`), beside
torchvision's alexnet layers: the numbers behind StackOptions.convs on CUDA; and conv1 as a 3x3 convolution
over 4x4 pixel blocks (`space-to-depth`, StackOptions.conv1, on the 224 crop with its padding and the blocks'
pass counted).
Batch 256, cudnn.benchmark on. Beside the GPU time of each call, the host's time to launch it (each call begun
with the device idle): an eager bf16 step waits for its host, so a form that launches more, or costs cuDNN more
set-up (a grouped convolution), can lose there while its kernels win.

    PYTHONPATH=. python3 tools/conv_microbench.py [--dtype bf16|fp32] [--layout channels-last|contiguous]
"""
from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from alexnet2gpu.bench.measure import host_times
from alexnet2gpu.ops.conv import conv1_space_to_depth

# name: (input maps, output maps, kernel, stride, padding, input size, groups) of the merged network (both towers)
MERGED = {
    "conv1": (3, 96, 11, 4, 0, 227, 1),
    "conv2": (96, 256, 5, 1, 2, 27, 2),
    "conv3": (256, 384, 3, 1, 1, 13, 1),
    "conv4": (384, 384, 3, 1, 1, 13, 2),
    "conv5": (384, 256, 3, 1, 1, 13, 2),
}
TORCHVISION = {
    "conv1": (3, 64, 11, 4, 2, 224, 1),
    "conv2": (64, 192, 5, 1, 2, 27, 1),
    "conv3": (192, 384, 3, 1, 1, 13, 1),
    "conv4": (384, 256, 3, 1, 1, 13, 1),
    "conv5": (256, 256, 3, 1, 1, 13, 1),
}
TOWERS = 2
PAPER_CROP = 224  # padded to conv1's 227 (docs/paper.md §3)


def make_step(form: str, spec, batch: int, dtype, fmt, backward: bool, dev: str = "cuda"):
    """A closure running the layer once in `form` (and its backward, for the input where it has one)."""
    cin, cout, k, s, p, size, groups = spec
    if form == "space-to-depth":
        return _space_to_depth_step(spec, batch, dtype, fmt, backward, dev)
    weight = (torch.randn(cout, cin // groups, k, k, device=dev, dtype=dtype) * 0.01).contiguous(memory_format=fmt)
    weight.requires_grad_(backward)
    bias = torch.zeros(cout, device=dev, dtype=dtype, requires_grad=backward)
    needs_input_grad = backward and cin != 3  # conv1 reads the image
    per_tower = form == "towers" and (groups > 1 or cout % TOWERS == 0)
    if per_tower and groups > 1:  # each tower's own maps, as a dense tensor of its own
        inputs = [torch.randn(batch, cin // TOWERS, size, size, device=dev, dtype=dtype).contiguous(memory_format=fmt)
                  for _ in range(TOWERS)]
    else:
        inputs = [torch.randn(batch, cin, size, size, device=dev, dtype=dtype).contiguous(memory_format=fmt)]
    for x in inputs:
        x.requires_grad_(needs_input_grad)
    leaves = [t for t in inputs + [weight, bias] if t.requires_grad]

    def forward():
        if form == "grouped":
            return [F.conv2d(inputs[0], weight, bias, s, p, groups=groups)]
        ws, bs = weight.chunk(TOWERS, 0), bias.chunk(TOWERS, 0)
        xs = inputs if groups > 1 else inputs * TOWERS  # towers: a cross layer reads the same maps twice
        return [F.conv2d(x, w, b, s, p) for x, w, b in zip(xs, ws, bs)]

    if not backward:
        def step():
            with torch.no_grad():
                forward()
        return step
    grads = None

    def step():
        nonlocal grads
        outs = forward()
        if grads is None:
            grads = [torch.randn_like(o) for o in outs]
        torch.autograd.grad(outs, leaves, grads)
    return step


def _space_to_depth_step(spec, batch: int, dtype, fmt, backward: bool, dev: str):
    cin, cout, k, s, _, size, _ = spec
    layer = torch.nn.Conv2d(cin, cout, k, s, device=dev, dtype=dtype).to(memory_format=fmt).requires_grad_(backward)
    x = torch.randn(batch, cin, PAPER_CROP, PAPER_CROP, device=dev, dtype=dtype).contiguous(memory_format=fmt)
    pad = size - PAPER_CROP

    def step():
        with torch.set_grad_enabled(backward):
            out = conv1_space_to_depth(x, pad, layer)
            if backward:
                torch.autograd.grad(out, list(layer.parameters()), torch.ones_like(out))
    return step


def host_us(step, repeats: int = 20) -> float:
    """Median microseconds the host takes to return from step(), each call begun with the device idle."""
    step()
    return host_times(step, torch.device("cuda"), repeats)[0] * 1e6


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--layout", default="channels-last", choices=["channels-last", "contiguous"])
    p.add_argument("--batch-size", type=int, default=256)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("conv_microbench.py: needs a CUDA device", file=sys.stderr)
        return 2
    from triton.testing import do_bench

    torch.backends.cudnn.benchmark = True
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    fmt = torch.channels_last if args.layout == "channels-last" else torch.contiguous_format
    rows = [("torchvision", name, spec) for name, spec in TORCHVISION.items()]
    rows += [(form, name, spec) for form in ("grouped", "towers") for name, spec in MERGED.items()]
    rows.append(("space-to-depth", "conv1", MERGED["conv1"]))
    print(f"batch {args.batch_size}, {args.dtype}, {args.layout}; microseconds per call: GPU (do_bench median), "
          "then the host's to launch it")
    print(f"{'form':12} {'layer':6} {'forward':>9} {'fwd+bwd':>9} {'host fwd':>9} {'host f+b':>9}")
    totals: dict[str, list[float]] = {}
    for form, name, spec in rows:
        times = [float("nan")] * 4
        for backward in (False, True):
            try:
                step = make_step(form, spec, args.batch_size, dtype, fmt, backward)
                times[int(backward)] = do_bench(step) * 1e3
                times[2 + int(backward)] = host_us(step)
            except Exception as error:  # one form cuDNN cannot run must not hide the others
                print(f"{form:12} {name:6} failed: {str(error).splitlines()[0]}")
        if form != "space-to-depth":  # conv1 alone: no total of five layers
            total = totals.setdefault(form, [0.0] * 4)
            for i, value in enumerate(times):
                total[i] += value
        print(f"{form:12} {name:6} " + " ".join(f"{t:9.1f}" for t in times))
    for form, total in totals.items():
        print(f"{form:12} {'all':6} " + " ".join(f"{t:9.1f}" for t in total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
