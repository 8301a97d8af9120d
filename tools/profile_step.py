"""Where one training step's GPU time goes: the top CUDA kernels of a bench row's step, and kernels per step.

    PYTHONPATH=. python3 tools/profile_step.py --row merged-bf16 --batch-size 256 --out DIR
Writes DIR/profile-ROW.txt (the table) and prints it. Needs a CUDA device.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from alexnet2gpu.bench.measure import make_train_step, synthetic_batch
from alexnet2gpu.bench.variants import VARIANTS, build_variant
from alexnet2gpu.device import AMP_DTYPES


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--row", default="merged-bf16", choices=sorted(VARIANTS))
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out", default=".")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("profile_step.py: needs a CUDA device", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    variant = VARIANTS[args.row]
    torch.manual_seed(0)
    model = build_variant(variant, device)
    x, y = synthetic_batch(args.batch_size, 1000, device, channels_last=variant.channels_last)
    step = make_train_step(model, x, y, AMP_DTYPES[variant.amp], variant.graphs)
    for _ in range(5):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()  # the wall time beside the GPU time: a step whose host is slower waits for it
    for _ in range(args.steps):
        step()
    torch.cuda.synchronize()
    wall = (time.perf_counter() - start) / args.steps
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(args.steps):
            step()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    total = sum(e.self_device_time_total for e in events)
    kernels = sum(e.count for e in events)
    lines = [f"{args.row}, batch {args.batch_size}, {torch.cuda.get_device_name()}, torch {torch.__version__}: "
             f"{total / args.steps / 1e3:.2f} ms of GPU time in a {wall * 1e3:.2f} ms step (wall, unprofiled), "
             f"{kernels / args.steps:.0f} kernels per step"]
    for e in sorted(events, key=lambda e: -e.self_device_time_total)[:args.top]:
        share = 100 * e.self_device_time_total / max(total, 1)
        lines.append(f"{share:5.1f}%  {e.self_device_time_total / args.steps / 1e3:7.3f} ms  "
                     f"x{e.count // args.steps:<3d} {e.key[:110]}")
    text = "\n".join(lines)
    print(text)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, f"profile-{args.row}.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
