"""Throughput of every way to run AlexNet on this machine, against torchvision's alexnet and the hardware.

    python bench.py                                   # every row, train + infer, batch 128 (on a CPU)
    python bench.py --quick                           # smoke run: small batch, few steps, < 2 min on 2 cores
    python bench.py --batch-sizes 32,64,128 --mode train --json bench.json --plot bench.png
    python bench.py --rows merged,torchvision,tower-parallel --steps 11
    python bench.py --device cuda                     # the GPU comparison: goal rows, training, batch 256
    python bench.py --compile                         # the torch.compile rows on a CPU too (slow to compile)
    OMP_WAIT_POLICY=PASSIVE python bench.py           # on a CPU shared with other busy processes

Rows: merged, two-device, torchvision, each with torch.compile (on request on a CPU), bf16 and CUDA graphs (on
CUDA); train.py's epoch loop (train-loop, train-loop-graphs); the two-process rows tower-parallel and
data-parallel (DDP, half the batch each), which bench starts itself; and the loader alone (input-pipeline,
input-pipeline-gpu). Synthetic input: the loader is not measured except in its own row. Single-process
rows are timed round-robin in one process; the median step over --steps timed steps after --warmup, each
bracketed by a device synchronisation. GFLOP/s counts 2 x forward multiply-adds (x3 for training) from the
layer table; %matmul compares it with a square matrix multiply timed in the same run. A line before the
table warns when other work shared the cores (the load average, read before, between and after the rows);
a speed goal that its figures cannot decide says "not judged" and why. See docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import sys

from alexnet2gpu.bench import report, runner
from alexnet2gpu.distributed.device import default_device_type
from alexnet2gpu.errors import TrainError


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="rows: " + ", ".join(runner.ALL_ROWS))
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present, else cpu)")
    p.add_argument("--batch-size", type=int, default=None, help="images per step (default 128, the paper's; CUDA 256)")
    p.add_argument("--batch-sizes", default="", help="comma list for a sweep, e.g. 32,64,128 (overrides --batch-size)")
    p.add_argument("--mode", default=None, help="train, infer or train,infer (default; CUDA: train)")
    p.add_argument("--rows", default="", help="comma list of rows (default: all that can run here; CUDA: the rows "
                   "of the speed goals)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per row (default 2, CUDA 3; --quick 1)")
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps per row; the median is reported (default 7, CUDA 15; --quick 3)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads of the one-process rows (default: one per core)")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="the torch.compile rows (default: on CUDA only; a minute or more of compiling)")
    p.add_argument("--glibc-default-malloc", action="store_true",
                   help="CPU: leave glibc's malloc thresholds alone (default: keep freed memory, see allocator.py)")
    p.add_argument("--data", default=None, metavar="DIR", help="input-pipeline row: train.py's data folder "
                   "(default: the built-in set)")
    p.add_argument("--workers", type=int, default=None, help="input-pipeline row: loader processes (default: train.py's)")
    p.add_argument("--cpu-decode-share", default="auto", metavar="auto|F", help="input-pipeline-gpu row: the "
                   "fraction of JPEGs the workers decode, the rest on the GPU (default: auto, train.py's)")
    p.add_argument("--quick", action="store_true", help="batch 8, 1 warm-up + 3 timed steps, fewer rows")
    p.add_argument("--json", default=None, metavar="PATH", help="write one JSON record per row")
    p.add_argument("--plot", default=None, metavar="PATH", help="draw images/s per row (PNG)")
    return p.parse_args(argv)


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{what} must be whole numbers separated by commas, got {text!r}.") from None


def options(args: argparse.Namespace) -> runner.Options:
    device = args.device or default_device_type()
    cuda = device.startswith("cuda")
    batch = args.batch_size or (256 if cuda else 128)
    batches = _ints(args.batch_sizes, "--batch-sizes") if args.batch_sizes else (batch,)
    rows = tuple(r.strip() for r in args.rows.split(",") if r.strip())
    mode = args.mode or ("train" if cuda else "train,infer")
    opts = runner.Options(device=device, batch_sizes=batches, modes=tuple(m.strip() for m in mode.split(",")),
                          rows=rows or (runner.CUDA_ROWS if cuda else runner.ALL_ROWS), threads=args.threads,
                          num_classes=args.num_classes,
                          allow_compile=args.compile if args.compile is not None else cuda,
                          keep_freed_memory=not args.glibc_default_malloc, data=args.data, workers=args.workers,
                          cpu_decode_share=args.cpu_decode_share)
    if cuda:
        opts.warmup, opts.steps = 3, 15  # a GPU step is milliseconds: more of them for a steady median
    if args.quick:
        opts.batch_sizes = batches if args.batch_sizes else (8,)
        opts.rows = rows or runner.QUICK_ROWS
        opts.warmup, opts.steps = 1, 3
    opts.warmup = opts.warmup if args.warmup is None else args.warmup
    opts.steps = opts.steps if args.steps is None else args.steps
    return opts


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        opts = options(args)
        records = runner.run(opts)
        warning = report.load_warning(records)
        if warning:
            print(warning)
        print(report.table(records))
        print()
        print(report.goals_text(report.goals(records)))
    except (ValueError, TrainError) as error:
        print(f"bench.py: {error}", file=sys.stderr)
        return 2
    for path, write in ((args.json, report.write_json), (args.plot, report.write_plot)):
        try:
            if path:
                write(path, records)
        except OSError as error:  # the measured rows are printed above: only this file is missing
            print(f"bench.py: could not write {path} ({error.strerror or error}): the table above has every row; "
                  "pass a path in a folder you can write to.", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
