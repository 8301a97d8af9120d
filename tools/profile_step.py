"""Where one training step's time goes: the host's share (launching the step, the Python functions it spends
that time in) and, on CUDA, the top kernels of a bench row's step and kernels per step.

    PYTHONPATH=. python3 tools/profile_step.py --row merged-bf16 --batch-size 256 --out DIR
Writes DIR/profile-ROW.txt (the table) and prints it. Needs a CUDA device; `--device cpu` runs the host part
alone (a check of the tool: on a CPU the host does all the work).

Host time: each step is called after a synchronisation and timed until the call returns, before the device
has finished. An eager step whose host time exceeds its device time leaves the GPU waiting between kernels,
and then a CUDA graph or fewer launches pay where faster kernels would not.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from alexnet2gpu.bench.measure import make_train_step, synthetic_batch
from alexnet2gpu.bench.variants import VARIANTS, build_variant
from alexnet2gpu.device import AMP_DTYPES, synchronize


def host_times(step, device: torch.device, steps: int) -> tuple[float, float]:
    """Median seconds (until the call returns, until the device is done) of `steps` steps, each begun idle."""
    launched, finished = [], []
    for _ in range(steps):
        synchronize(device)
        start = time.perf_counter()
        step()
        launched.append(time.perf_counter() - start)
        synchronize(device)
        finished.append(time.perf_counter() - start)
    return statistics.median(launched), statistics.median(finished)


def python_hotspots(step, device: torch.device, steps: int, top: int) -> list[str]:
    """The functions the host spends the steps in, by own time (cProfile; builtins include their C++ work)."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        step()
    synchronize(device)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
    body = text.getvalue().splitlines()
    start = next((i for i, line in enumerate(body) if line.lstrip().startswith("ncalls")), 0)
    return [f"python (cProfile, {steps} steps, by own time):"] + [line for line in body[start:] if line.strip()]


def kernel_table(step, steps: int, top: int, wall: float) -> tuple[str, list[str]]:
    """(summary, lines): GPU time and kernels per step, and the top kernels by GPU time."""
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    total = sum(e.self_device_time_total for e in events)
    kernels = sum(e.count for e in events)
    summary = (f"{total / steps / 1e3:.2f} ms of GPU time in a {wall * 1e3:.2f} ms step (wall, unprofiled, steps "
               f"queued back to back), {kernels / steps:.0f} kernels per step")
    lines = []
    for e in sorted(events, key=lambda e: -e.self_device_time_total)[:top]:
        share = 100 * e.self_device_time_total / max(total, 1)
        lines.append(f"{share:5.1f}%  {e.self_device_time_total / steps / 1e3:7.3f} ms  "
                     f"x{e.count // steps:<3d} {e.key[:110]}")
    return summary, lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--row", default="merged-bf16", choices=sorted(VARIANTS))
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--python-top", type=int, default=15, help="Python functions listed (0: none)")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--out", default=".")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("profile_step.py: needs a CUDA device", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    variant = VARIANTS[args.row]
    torch.manual_seed(0)
    model = build_variant(variant, device)
    x, y = synthetic_batch(args.batch_size, 1000, device, channels_last=variant.channels_last)
    step = make_train_step(model, x, y, AMP_DTYPES[variant.amp], variant.graphs)
    for _ in range(5 if device.type == "cuda" else 1):
        step()
    synchronize(device)
    start = time.perf_counter()  # the wall time beside the GPU time: a step whose host is slower waits for it
    for _ in range(args.steps):
        step()
    synchronize(device)
    wall = (time.perf_counter() - start) / args.steps
    launched, finished = host_times(step, device, args.steps)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    head = f"{args.row}, batch {args.batch_size}, {name}, torch {torch.__version__}"
    lines = []
    if device.type == "cuda":
        summary, lines = kernel_table(step, args.steps, args.top, wall)
        head += f": {summary}"
    host = (f"host: {launched * 1e3:.2f} ms to launch a step begun idle, {finished * 1e3:.2f} ms until the device "
            f"finished it")
    lines = [head, host] + lines
    if args.python_top:
        lines += python_hotspots(step, device, args.steps, args.python_top)
    text = "\n".join(lines)
    print(text)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, f"profile-{args.row}.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
