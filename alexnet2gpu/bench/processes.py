"""Benchmark rows that need two processes: `tower-parallel` (one tower each) and `data-parallel` (DDP of the
merged model, half the batch each). The benchmark starts the processes itself (torch.multiprocessing,
spawn) and each writes its step times to a file.

Fairness on a CPU: the two processes get disjoint halves of the cores this process may use (pinned with
sched_setaffinity) and that many threads each, so "2 processes x 1 core" competes with "1 process x 2
cores" on the same silicon. On CUDA, rank r computes on cuda:(r mod GPU count); two ranks sharing one GPU
talk over gloo (NCCL refuses two ranks on one GPU), otherwise NCCL.
"""
from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist

from alexnet2gpu.distributed.world import setup, teardown
from alexnet2gpu.model.layouts import build_model

from .allocator import keep_freed_memory
from .measure import (PeakMemory, allreduce_bytes, make_infer_step, make_train_step, median, parameter_count,
                      process_peak_bytes, synthetic_batch, time_steps)

KINDS = ("tower-parallel", "data-parallel")
PROCESSES = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, kind: str, cfg: dict, out_dir: str) -> None:
    """One process of a two-process row: build, warm up, measure memory and time steps, write JSON."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(PROCESSES),
                      LOCAL_WORLD_SIZE=str(PROCESSES), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(cfg["port"]))
    if cfg["device"] == "cpu":
        if cfg["cpus"]:
            os.sched_setaffinity(0, cfg["cpus"][rank])
        if cfg.get("keep_freed_memory"):
            keep_freed_memory()
    torch.set_num_threads(cfg["threads"])
    # The torchrun-style world of train.py: rank r on cuda:(r mod GPU count) or the CPU, NCCL between GPUs
    # of their own, gloo on the CPU or for two ranks sharing one GPU.
    ctx = setup(cfg["device"])
    device = ctx.device
    torch.manual_seed(0)  # every rank draws the same canonical weights
    result: dict = {"rank": rank, "device": str(device)}
    batch = cfg["batch_size"]
    if kind == "tower-parallel":
        model = build_model("tower-parallel", cfg["num_classes"], ctx=ctx)
        x, y = synthetic_batch(batch, cfg["num_classes"], device)  # both towers read the whole image
    else:
        merged = build_model("merged", cfg["num_classes"], device=device)
        ids = [device.index] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(merged, device_ids=ids)
        x, y = synthetic_batch(batch // PROCESSES, cfg["num_classes"], device, seed=rank)
    try:
        for mode in cfg["modes"]:
            if mode == "train":
                step = make_train_step(model, x, y)
            else:  # inference: DDP's wrapped module alone, no gradients to reduce
                step = make_infer_step(getattr(model, "module", model), x)
            time_steps(step, device, cfg["warmup"], 0)
            with PeakMemory(device) as peak:
                step()
            dist.barrier()
            times = time_steps(step, device, 0, cfg["steps"])
            received = sum(b for _, b in getattr(model, "exchanges", []))
            peak_bytes = peak.bytes if peak.bytes is not None else process_peak_bytes()
            result[mode] = {"times": times, "peak_bytes": peak_bytes, "received_bytes": received,
                            "params": parameter_count(model)}
    finally:
        teardown()
    Path(out_dir, f"{rank}.json").write_text(json.dumps(result))


def run_two_process(kind: str, cfg: dict) -> dict:
    """Run a two-process row; returns {mode: {...}} with per-step times (slowest rank), peak memory per
    process and bytes each process sends per step, or {"skip": why}."""
    import torch.multiprocessing as mp

    cfg = dict(cfg, port=_free_port())
    with tempfile.TemporaryDirectory() as out_dir:
        try:
            mp.start_processes(_worker, args=(kind, cfg, out_dir), nprocs=PROCESSES, join=True, start_method="spawn")
        except Exception as error:  # a worker failed: report it on the row, keep the other rows
            lines = [l for l in str(error).strip().splitlines() if l.strip()]
            return {"skip": f"failed: {lines[-1] if lines else type(error).__name__}"}
        ranks = [json.loads(Path(out_dir, f"{r}.json").read_text()) for r in range(PROCESSES)]
    out = {}
    for mode in cfg["modes"]:
        per_rank = [r[mode] for r in ranks]
        step_times = [max(ts) for ts in zip(*(r["times"] for r in per_rank))]  # a step ends when both have
        received = [r["received_bytes"] for r in per_rank]
        if kind == "tower-parallel":
            # A rank sends what the other received forward, and backward the gradients of what it received.
            sent = [received[1 - t] + (received[t] if mode == "train" else 0) for t in range(PROCESSES)]
        else:
            sent = [allreduce_bytes(per_rank[0]["params"], PROCESSES) if mode == "train" else 0] * PROCESSES
        out[mode] = {"seconds": median(step_times), "times": step_times, "peak_bytes": [r["peak_bytes"] for r in per_rank],
                     "exchange_bytes": max(sent), "devices": [r["device"] for r in ranks]}
    return out


def split_cpus(cpus: list[int]) -> list[list[int]]:
    """Disjoint halves of the usable cores, one per process (both get all when there is only one core)."""
    if len(cpus) < PROCESSES:
        return [cpus] * PROCESSES
    half = len(cpus) // PROCESSES
    return [cpus[r * half:(r + 1) * half] for r in range(PROCESSES)]
