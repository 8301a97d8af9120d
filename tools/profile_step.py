"""Where one training step's time goes: the host's share (launching the step, by phase, by ATen op and by
Python function; calls that wait for the device) and, on CUDA, the top kernels of a bench row's step and
kernels per step.

    PYTHONPATH=. python3 tools/profile_step.py --row merged-bf16 --batch-size 256 --out DIR
Writes DIR/profile-ROW.txt (the table) and prints it. Needs a CUDA device; `--device cpu` runs the host part
alone (a check of the tool: on a CPU the host does all the work).

Host time: each step is called after a synchronisation and timed until the call returns, before the device
has finished. An eager step whose host time exceeds its GPU time leaves the GPU waiting between kernels,
and then a CUDA graph or fewer launches pay where faster kernels would not. To find which host work to cut:
- phases: the forward, the loss with the backward, and the optimiser step, each timed on the host;
- host ops: torch.profiler's own host time of each ATen op and CUDA runtime call (a convolution's cuDNN
  set-up, a Triton launch's driver call), and what is left for Python around them;
- device waits: calls in the step that wait for the device (CUDA's sync debug mode), which would make its
  host time include GPU time.
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
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from alexnet2gpu.bench.measure import host_times, make_train_step, synthetic_batch
from alexnet2gpu.bench.variants import VARIANTS, build_variant
from alexnet2gpu.distributed.device import AMP_DTYPES, autocast, synchronize
from alexnet2gpu.train.optim import make_optimizer


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


def phase_times(model, x, y, amp_dtype, device: torch.device, steps: int) -> str:
    """Median host milliseconds of a step's phases, each step begun idle: the forward, the loss and backward,
    the optimiser step (train.py's own step, engine.train_step, split where it calls them)."""
    optimizer = make_optimizer(model, lr=0.01)
    times = {"forward": [], "loss + backward": [], "optimiser": []}
    for _ in range(steps + 1):  # the first sets up the optimiser's state
        synchronize(device)
        t0 = time.perf_counter()
        model.zero_grad(set_to_none=True)
        with autocast(device, amp_dtype):
            logits = model(x)
        t1 = time.perf_counter()
        F.cross_entropy(logits.float(), y).backward()
        t2 = time.perf_counter()
        optimizer.step()
        t3 = time.perf_counter()
        for name, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2)):
            times[name].append(seconds)
    synchronize(device)
    return "host by phase: " + ", ".join(f"{name} {statistics.median(t[1:]) * 1e3:.2f} ms" for name, t in times.items())


def host_ops(step, device: torch.device, steps: int, top: int, launched: float) -> list[str]:
    """The ATen ops and CUDA runtime calls the host spends a step in, by their own host time (torch.profiler,
    whose own overhead adds to every one), and what is left of the unprofiled launch time for Python."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        synchronize(device)
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CPU
              and e.key not in ("cudaDeviceSynchronize", "cudaStreamSynchronize")]  # the closing wait, not the step
    own = sum(e.self_cpu_time_total for e in events) / steps / 1e3
    lines = [f"host ops (torch.profiler, {steps} steps, own host time a step; all ops {own:.2f} ms under the "
             f"profiler, against {launched * 1e3:.2f} ms to launch an unprofiled step):"]
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]:
        lines.append(f"  {e.self_cpu_time_total / steps:8.1f} us  x{e.count // steps:<3d} {e.key[:100]}")
    return lines


def device_waits(step) -> str:
    """The calls in one step that wait for the device (CUDA's sync debug mode warns at each)."""
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    waits = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message).lower()]
    return f"device waits in a step: {len(waits)}" + (f" (first: {waits[0][:120]})" if waits else "")


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
    p.add_argument("--ops-top", type=int, default=20, help="host ops listed (0: none)")
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
    kernels = []
    if device.type == "cuda":
        summary, kernels = kernel_table(step, args.steps, args.top, wall)
        head += f": {summary}"
    host = (f"host: {launched * 1e3:.2f} ms to launch a step begun idle, {finished * 1e3:.2f} ms until the device "
            f"finished it")
    lines = [head, host]
    if not variant.graphs and not variant.compile:  # a graphed or compiled step has no eager phases to time
        lines.append(phase_times(model, x, y, AMP_DTYPES[variant.amp], device, args.steps))
    if device.type == "cuda":
        lines.append(device_waits(step))
    if args.ops_top:
        lines += host_ops(step, device, args.steps, args.ops_top, launched)
    lines += kernels
    if args.python_top:
        lines += python_hotspots(step, device, args.steps, args.python_top)
    text = "\n".join(lines)
    print(text)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, f"profile-{args.row}.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
