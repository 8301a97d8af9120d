"""Run a benchmark: build the selected rows, time them, and turn the times into records (one per row).

A record: variant, mode ("train"/"infer"/"matmul"), device, batch_size, processes, threads, ms_per_step,
images_per_s, gflops, peak_fraction (of the matrix-multiply rate measured in the same run on the same
device and dtype), peak_memory_mb (per process: a list for two-process rows), exchange_mb (bytes one
process or tower sends the other per step), note, settings, dtype (of the matmul it is compared with), load
(the run's load readings, the same in every record: measure.LoadWatch).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import torch

from alexnet2gpu.data.gpu.decode import resolve_cpu_share
from alexnet2gpu.distributed.device import AMP_DTYPES, check_device
from alexnet2gpu.distributed.world import first_line

from .allocator import keep_freed_memory
from .loop import GRAPHS_ROW as LOOP_GRAPHS_ROW, ROW as LOOP_ROW, measure_train_loop, reference_variant
from .measure import (LoadWatch, PeakMemory, device_name, make_infer_step, make_train_step, matmul_step, median,
                      step_flops, synthetic_batch, time_round_robin, time_steps, tower_exchange_bytes, usable_cpus)
from .pipeline import GPU_ROW as PIPELINE_GPU_ROW, ROW as PIPELINE_ROW, measure_input_pipeline
from .processes import KINDS, PROCESSES, run_two_process, split_cpus
from .variants import VARIANTS, available, build_variant, variant_multiply_adds

MODES = ("train", "infer")
ALL_ROWS = tuple(VARIANTS) + (LOOP_ROW, LOOP_GRAPHS_ROW) + KINDS + (PIPELINE_ROW, PIPELINE_GPU_ROW)
QUICK_ROWS = ("merged", "two-device", "torchvision", "tower-parallel", "data-parallel", PIPELINE_ROW)
# The GPU comparison that `bench.py --device cuda` runs by default: each speed goal's rows and nothing else,
# so that it finishes in minutes (compiling is most of it).
CUDA_ROWS = ("merged", "two-device", "torchvision", "merged-bf16", "torchvision-bf16", "merged-graphs",
             "two-device-graphs", "merged-bf16-graphs", "torchvision-bf16-graphs", "merged-bf16-compile",
             "torchvision-bf16-compile", LOOP_ROW, LOOP_GRAPHS_ROW, PIPELINE_GPU_ROW)


@dataclass
class Options:
    device: str = "cpu"
    batch_sizes: tuple[int, ...] = (128,)
    modes: tuple[str, ...] = MODES
    rows: tuple[str, ...] = ALL_ROWS
    warmup: int = 2
    steps: int = 7
    threads: int = 0  # 0: one per usable core
    num_classes: int = 1000
    allow_compile: bool = False
    data: str | None = None  # the input-pipeline row's data folder (default: the built-in set)
    workers: int | None = None  # the input-pipeline row's loader processes (default: train.py's)
    cpu_decode_share: str | float = "auto"  # the input-pipeline-gpu row's CPU share (as train.py's flag)
    keep_freed_memory: bool = True  # allocator.keep_freed_memory on the CPU (also in the two-process rows)
    log: object = field(default=lambda *a: print(*a, file=sys.stderr, flush=True))


def check_options(opts: Options) -> torch.device:
    """Refuse bad options in one sentence each; returns the device."""
    device = check_device(opts.device)
    unknown = [r for r in opts.rows if r not in ALL_ROWS]
    if unknown:
        raise ValueError(f"unknown benchmark row(s) {', '.join(unknown)}: choose from {', '.join(ALL_ROWS)}.")
    bad_modes = [m for m in opts.modes if m not in MODES]
    if bad_modes:
        raise ValueError(f"unknown mode(s) {', '.join(bad_modes)}: choose train, infer or both.")
    for name, value in (("batch size", min(opts.batch_sizes, default=0)), ("steps", opts.steps)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}.")
    resolve_cpu_share(opts.cpu_decode_share, 1)  # "auto" or a fraction: refused here, not as a skipped row
    if any(b % PROCESSES for b in opts.batch_sizes) and "data-parallel" in opts.rows:
        raise ValueError(f"the data-parallel row splits the batch over {PROCESSES} processes: use even batch sizes.")
    return device


_kept_freed_memory = False


def run(opts: Options) -> list[dict]:
    """Every selected row at every batch size; returns the records."""
    device = check_options(opts)
    global _kept_freed_memory
    if device.type == "cpu" and opts.keep_freed_memory:
        _kept_freed_memory = keep_freed_memory()
    cpus = usable_cpus()
    threads = opts.threads or len(cpus)
    torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: as train.py does, for every row alike
    # Bench's own busy threads: on CUDA the one that launches the kernels.
    load = LoadWatch(threads if device.type == "cpu" else 1, log=opts.log)
    load.read("before timing")
    records = []
    for batch in opts.batch_sizes:
        records += _single_process_rows(opts, device, batch, threads)
        load.read(f"after the one-process rows at batch {batch}")
        rate = next((r["gflops"] for r in records if r["variant"] == "matmul-float32" and r["batch_size"] == batch), 0.0)
        for row, graphs in ((LOOP_ROW, False), (LOOP_GRAPHS_ROW, True)):
            if row in opts.rows:
                records.append(_or_skip(row, device, batch,
                                        lambda: _loop_row(opts, device, batch, threads, records, graphs)))
                load.read(f"after {row} at batch {batch}")
        for kind in (k for k in KINDS if k in opts.rows):
            records += _or_skip(kind, device, batch, lambda: _two_process_row(
                opts, device, batch, kind, cpus, threads, rate or _matmul_rate(device)), rows=True)
            load.read(f"after {kind} at batch {batch}")
        if PIPELINE_ROW in opts.rows:
            records.append(_or_skip(PIPELINE_ROW, device, batch, lambda: _pipeline_row(opts, device, batch)))
            load.read(f"after {PIPELINE_ROW} at batch {batch}")
        if PIPELINE_GPU_ROW in opts.rows:
            records.append(_or_skip(PIPELINE_GPU_ROW, device, batch,
                                    lambda: _pipeline_row(opts, device, batch, decode="gpu")))
            load.read(f"after {PIPELINE_GPU_ROW} at batch {batch}")
    summary = load.summary()
    for r in records:
        r["load"] = summary
    return records


def _or_skip(name: str, device: torch.device, batch: int, measure, rows: bool = False):
    """measure()'s record (`rows`: its list of records), or a skipped record saying why: one row that cannot
    run never loses the others."""
    try:
        return measure()
    except Exception as error:  # noqa: BLE001 - whatever stops one row, the measured rows are still printed
        skipped = _skip_record(name, device, batch, first_line(error))
        return [skipped] if rows else skipped


def _pipeline_row(opts: Options, device: torch.device, batch: int, decode: str = "cpu") -> dict:
    """train.py's loader alone: what it can feed the model per second (it must keep up with the step)."""
    row = PIPELINE_GPU_ROW if decode == "gpu" else PIPELINE_ROW
    if decode == "gpu" and device.type != "cuda":
        return _skip_record(row, device, batch, "needs a CUDA device (JPEGs decoded with nvJPEG)")
    opts.log(f"batch {batch}: {row}")
    r = measure_input_pipeline(batch, device, opts.data, opts.workers, log=opts.log, decode=decode,
                               cpu_share=opts.cpu_decode_share)
    where = (f" decoded on the device with nvJPEG, {r['cpu_share']:.2f} of them in the workers "
             f"(--cpu-decode-share {opts.cpu_decode_share})") if decode == "gpu" else ""
    return _record(row, "load", device, batch, r["seconds_per_batch"], 0.0, 0.0, 1,
                   processes=r["workers"], note=f"{r['workers']} loader worker(s), JPEGs in {r['root']}{where}")


def _loop_row(opts: Options, device: torch.device, batch: int, threads: int, records: list[dict],
              graphs: bool = False) -> dict:
    """train.py's epoch loop on in-memory batches, beside the bare step it wraps."""
    row = LOOP_GRAPHS_ROW if graphs else LOOP_ROW
    if graphs and device.type != "cuda":
        return _skip_record(row, device, batch, "needs a CUDA device")
    opts.log(f"batch {batch}: {row}")
    seconds = measure_train_loop(batch, device, opts.num_classes, opts.warmup, opts.steps, graphs)
    reference = reference_variant(device, graphs)
    base = next((r for r in records if r["variant"] == reference and r["mode"] == "train"
                 and r["batch_size"] == batch), None)
    flops = step_flops(variant_multiply_adds(VARIANTS["merged"], opts.num_classes), batch, "train")
    rate = base["gflops"] / base["peak_fraction"] if base and base["peak_fraction"] else 0.0  # its dtype's matmul
    return _record(row, "train", device, batch, seconds, flops, rate, threads,
                   note=f"engine.train_one_epoch on in-memory uint8 batches, as {reference}",
                   dtype=base["dtype"] if base else "float32")


def _record(variant, mode, device, batch, seconds, flops, rate, threads, processes=1, peak=None, exchange=0,
            note="", dtype="float32") -> dict:
    gflops = flops / seconds / 1e9
    return {"variant": variant, "mode": mode, "device": device_name(device), "device_type": device.type,
            "batch_size": batch,
            "processes": processes, "threads": threads, "ms_per_step": seconds * 1e3,
            "images_per_s": batch / seconds if mode != "matmul" else 0.0, "gflops": gflops,
            "peak_fraction": gflops / rate if rate else 0.0, "peak_memory_mb": peak,
            "exchange_mb": exchange / 1e6, "note": note, "settings": settings(), "dtype": dtype}


def settings() -> str:
    """Process-wide settings that move CPU timings a lot (docs/benchmarks.md), for the record."""
    return (f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
            f"malloc keeps freed memory={_kept_freed_memory}, torch {torch.__version__}")


def _single_process_rows(opts: Options, device: torch.device, batch: int, threads: int) -> list[dict]:
    steps, meta, skipped = {}, {}, []
    for name in (r for r in opts.rows if r in VARIANTS):
        variant = VARIANTS[name]
        why = available(variant, device, opts.allow_compile)
        if why:
            skipped.append((name, why))
            continue
        torch.manual_seed(0)
        try:
            model = build_variant(variant, device, opts.num_classes)
        except Exception as error:  # noqa: BLE001 - any failure of one row becomes its note (see _or_skip)
            skipped.append((name, f"failed: {first_line(error)}"))
            continue
        amp = AMP_DTYPES[variant.amp]
        x, y = synthetic_batch(batch, opts.num_classes, device, channels_last=variant.channels_last)
        for mode in opts.modes:
            step = (make_train_step(model, x, y, amp, variant.graphs) if mode == "train"
                    else make_infer_step(model, x, amp))
            steps[(name, mode)] = (step, device)
            meta[(name, mode)] = variant
    if not steps:
        return [_skip_record(n, device, batch, why) for n, why in skipped]
    dtypes = {AMP_DTYPES[v.amp] or torch.float32 for v in meta.values()}
    matmul_flops = {}
    for dtype in dtypes:
        step, flops = matmul_step(device, dtype)
        steps[("matmul", str(dtype).removeprefix("torch."))] = (step, device)
        matmul_flops[dtype] = flops
    peaks = {}
    for key, (step, dev) in list(steps.items()):
        opts.log(f"batch {batch}: warming up {key[0]} ({key[1]})")
        try:  # compiling happens here, and an out-of-memory: either leaves the other rows running
            time_steps(step, dev, opts.warmup, 0)
            with PeakMemory(dev) as peak:
                step()
        except Exception as error:  # noqa: BLE001
            del steps[key]
            skipped.append((key[0], f"{key[1]} failed: {first_line(error)}"))
            continue
        peaks[key] = None if peak.bytes is None else round(peak.bytes / 2**20, 1)
    log_round = lambda r, n: opts.log(f"batch {batch}: timed round {r}/{n}")
    failed = {}
    times = time_round_robin(steps, 0, opts.steps, on_round=log_round, failed=failed)
    skipped += [(name, f"{mode} failed: {why}") for (name, mode), why in failed.items()]
    matmul = lambda dtype: times.get(("matmul", str(dtype).removeprefix("torch.")))
    rates = {dtype: matmul_flops[dtype] / median(matmul(dtype)) / 1e9 if matmul(dtype) else 0.0 for dtype in dtypes}
    records = []
    for (name, mode), ts in times.items():
        if name == "matmul":
            dtype = getattr(torch, mode)
            records.append(_record(f"matmul-{mode}", "matmul", device, batch, median(ts), matmul_flops[dtype],
                                   rates[dtype], threads, peak=peaks[(name, mode)],
                                   note="square matrix multiply: the reference rate", dtype=mode))
            continue
        variant = meta[(name, mode)]
        flops = step_flops(variant_multiply_adds(variant, opts.num_classes), batch, mode)
        exchange = tower_exchange_bytes(batch, mode) if variant.layout == "two-device" else 0
        dtype = AMP_DTYPES[variant.amp] or torch.float32
        records.append(_record(name, mode, device, batch, median(ts), flops, rates[dtype], threads,
                               peak=peaks[(name, mode)], exchange=exchange,
                               dtype=str(dtype).removeprefix("torch.")))
    return records + [_skip_record(n, device, batch, why) for n, why in skipped]


def _skip_record(name, device, batch, why) -> dict:
    return {"variant": name, "mode": "skipped", "device": device_name(device), "device_type": device.type,
            "batch_size": batch, "note": why}


def _two_process_row(opts: Options, device: torch.device, batch: int, kind: str, cpus, threads, rate) -> list[dict]:
    """`rate`: the fp32 matrix-multiply GFLOP/s of the whole device (1 process, all cores) in this run."""
    per_process = max(1, threads // PROCESSES)
    halves = split_cpus(cpus)
    opts.log(f"batch {batch}: {kind}, {PROCESSES} processes x {per_process} thread(s)"
             + (f" on cores {halves}" if device.type == "cpu" else ""))
    cfg = {"device": device.type, "batch_size": batch, "modes": list(opts.modes), "warmup": opts.warmup,
           "steps": opts.steps, "threads": per_process, "cpus": halves, "num_classes": opts.num_classes,
           "keep_freed_memory": opts.keep_freed_memory}
    result = run_two_process(kind, cfg)
    if "skip" in result:
        opts.log(f"{kind}: {result['skip']}")
        return [_skip_record(kind, device, batch, result["skip"])]
    records = []
    for mode, r in result.items():
        flops = step_flops(variant_multiply_adds(VARIANTS["merged"], opts.num_classes), batch, mode)
        note = f"cores {halves}" if device.type == "cpu" else f"devices {r['devices']}"
        records.append(_record(kind, mode, device, batch, r["seconds"], flops, rate, per_process, PROCESSES,
                               peak=[round(b / 2**20, 1) for b in r["peak_bytes"]], exchange=r["exchange_bytes"],
                               note=note))
    return records


def _matmul_rate(device: torch.device) -> float:
    """fp32 matrix-multiply GFLOP/s on `device` (when no single-process row measured it)."""
    step, flops = matmul_step(device)
    return flops / median(time_steps(step, device, 1, 5)) / 1e9
