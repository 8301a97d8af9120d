"""How a benchmark measures: the timed training and inference steps, synchronisation, round-robin timing,
the matrix-multiply rate, FLOP and exchange counts, peak memory, and the machine's load while it ran.

Method: warm-up steps, then the median over timed steps, each step bracketed by a device
synchronisation. Variants in one process are timed round-robin (one step of each in turn, repeated), so a
neighbour process that slows the machine for a while slows every variant alike and ratios stay fair.
"""
from __future__ import annotations

import math
import os
import statistics
import time
from typing import Callable

import torch
from torch import nn

from alexnet2gpu.distributed.device import autocast, synchronize
from alexnet2gpu.model.layers import LAYERS, multiply_adds
from alexnet2gpu.train.cuda_graphs import GraphedStep
from alexnet2gpu.train.engine import train_step
from alexnet2gpu.train.optim import make_optimizer

INPUT_SIZE = 224
INPUT_SCALE = 60.0  # synthetic input on the raw 0..255 scale with the mean subtracted (std of ImageNet pixels)


def synthetic_batch(batch_size: int, num_classes: int, device: torch.device, in_channels: int = 3, seed: int = 0,
                    channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed batch of random images and labels on `device`: the loader is not measured."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, in_channels, INPUT_SIZE, INPUT_SIZE, generator=gen) * INPUT_SCALE
    y = torch.randint(0, num_classes, (batch_size,), generator=gen)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.to(device), y.to(device)


def make_train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, amp_dtype=None,
                    graphs: bool = False) -> Callable[[], None]:
    """A no-argument closure running train.py's own `engine.train_step` with the paper's optimiser (SGD,
    momentum 0.9, weight decay 5e-4 on weights) on a fixed batch: what the timers call. `graphs`: the forward
    and backward replay a CUDA graph (train.py --cuda-graphs), captured on the second call."""
    optimizer = make_optimizer(model, lr=0.01)
    graphed = GraphedStep(model, warmup=1) if graphs else None

    def step():
        torch.compiler.cudagraph_mark_step_begin()  # a CUDA-graph row's outputs of the last step may be reused
        model.train()
        train_step(model, optimizer, x, y, autocast=autocast(x.device, amp_dtype), graphed=graphed)
        if graphed is None:
            optimizer.zero_grad(set_to_none=True)  # free the gradients while other variants run
    return step


def make_infer_step(model: nn.Module, x: torch.Tensor, amp_dtype=None) -> Callable[[], None]:
    """A no-argument closure running one inference forward pass (eval mode, no autograd)."""

    def step():
        model.eval()
        with torch.inference_mode(), autocast(x.device, amp_dtype):
            model(x)
    return step


def host_times(step, device: torch.device, steps: int) -> tuple[float, float]:
    """Median seconds (until the call returns, until the device is done) of `steps` steps, each begun idle: the
    host's time to launch a step, which an eager step on a GPU waits for when it exceeds the device's."""
    launched, finished = [], []
    for _ in range(steps):
        synchronize(device)
        start = time.perf_counter()
        step()
        launched.append(time.perf_counter() - start)
        synchronize(device)
        finished.append(time.perf_counter() - start)
    return statistics.median(launched), statistics.median(finished)


def time_steps(step: Callable[[], None], device: torch.device, warmup: int, steps: int) -> list[float]:
    """Seconds per step for `steps` timed steps after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def time_round_robin(steps: dict[str, tuple[Callable[[], None], torch.device]], warmup: int, repeats: int,
                     on_round=None, failed: dict | None = None) -> dict[str, list[float]]:
    """Time several steps in turn: warm each up, then `repeats` rounds of one timed step of each. With a
    `failed` dict, a step that raises (out of memory late in a run) is dropped and failed[name] says why;
    the others go on."""
    for step, device in steps.values():
        time_steps(step, device, warmup, 0)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(repeats):
        for name, (step, device) in steps.items():
            if name in times:
                try:
                    times[name] += time_steps(step, device, 0, 1)
                except Exception as error:  # noqa: BLE001 - whatever stops one step, the others are still timed
                    if failed is None:
                        raise
                    failed[name] = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
                    del times[name]
        if on_round:
            on_round(r + 1, repeats)
    return times


def median(times: list[float]) -> float:
    return statistics.median(times)


def matmul_step(device: torch.device, dtype: torch.dtype = torch.float32, size: int | None = None):
    """A square matrix multiply on `device` (a step to time) and its FLOPs: the rate the hardware reaches
    on the densest work there is, to which the network's rate is compared."""
    size = size or (8192 if device.type == "cuda" else 2048)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device, dtype)
    b = torch.randn(size, size, generator=gen).to(device, dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    return (lambda: torch.mm(a, b, out=out)), 2.0 * size ** 3


def count_multiply_adds(model: nn.Module, in_channels: int = 3) -> int:
    """Forward multiply-adds per image of any model built of Conv2d and Linear layers, counted with hooks
    (for torchvision's alexnet; ours come from the layer table, `model.multiply_adds`)."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_out = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        else:
            per_out = module.in_features
        total += output[0].numel() * per_out

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(1, in_channels, INPUT_SIZE, INPUT_SIZE, device=device))
    finally:
        for h in handles:
            h.remove()
    return total


def alexnet_multiply_adds(num_classes: int = 1000, in_channels: int = 3) -> int:
    """Forward multiply-adds per image of this project's AlexNet (724.4 M at 1000 classes)."""
    return sum(multiply_adds(num_classes, in_channels).values())


def step_flops(macs_per_image: int, batch_size: int, mode: str) -> float:
    """FLOPs of one step: 2 per multiply-add; training counts 3x the forward (forward, two backward products)."""
    return 2.0 * macs_per_image * batch_size * (3 if mode == "train" else 1)


def tower_exchange_bytes(batch_size: int, mode: str, element_size: int = 4) -> int:
    """Bytes one tower sends the other per step (paper §3.2; the most either tower sends).

    Forward, each tower sends its maps before conv3 (13x13x128), fc6 (6x6x128) and fc7 (2048), and tower 1
    its fc7 output (2048) to fc8 on tower 0; backward sends the gradients of what it received.
    """
    conv2_maps = LAYERS[1].out * 13 * 13
    conv5_maps = LAYERS[4].out * 6 * 6
    fc_units = LAYERS[5].out
    each_way = conv2_maps + conv5_maps + fc_units  # both towers send this much, forward
    to_fc8 = LAYERS[6].out  # tower 1 -> tower 0 only
    if mode == "train":  # tower 1 sends its share + fc7 forward, and gradients of what it received backward
        per_image = 2 * each_way + to_fc8
    else:
        per_image = each_way + to_fc8
    return per_image * batch_size * element_size


def allreduce_bytes(num_params: int, processes: int, element_size: int = 4) -> int:
    """Bytes one process sends to all-reduce `num_params` gradients with a ring over `processes`."""
    return int(2 * (processes - 1) / processes * num_params * element_size) if processes > 1 else 0


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class PeakMemory:
    """Peak memory of the steps run inside `with PeakMemory(device) as peak:`, in bytes (`peak.bytes`).

    CUDA: torch.cuda.max_memory_allocated (exact: weights, gradients, optimizer state, activations). CPU:
    None, since the C allocator keeps freed memory for reuse, so the resident set of a process that ran
    other rows says nothing about this one; two-process rows report each fresh process's peak resident set
    instead (`process_peak_bytes`).
    """

    def __init__(self, device: torch.device):
        self.device, self.bytes = device, None

    def __enter__(self):
        synchronize(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc):
        synchronize(self.device)
        if self.device.type == "cuda":
            self.bytes = torch.cuda.max_memory_allocated(self.device)
        return False


def process_peak_bytes() -> int:
    """The peak resident set of this process so far: VmHWM of /proc/self/status, which starts afresh at
    exec (ru_maxrss would carry over the parent's peak into a spawned child)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource  # not Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def usable_cpus() -> list[int]:
    """The CPU cores this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return list(range(os.cpu_count() or 1))


LOAD_MARGIN = 0.5  # cores of other work let pass: daemons, a shell, an editor
LOAD_WINDOW_S = 60.0  # the time constant of the kernel's 1-minute load average


def machine_load() -> tuple[float, int] | None:
    """The 1-minute load average and the cores it counts (the whole machine's), or None where there is none."""
    try:
        return os.getloadavg()[0], os.cpu_count() or 1
    except (OSError, AttributeError):
        return None


class LoadWatch:
    """Readings of the machine's load during a run (`read` before, between and after rows), each saying
    whether other work shared the cores that bench's `threads` use.

    The load average counts every runnable thread of the machine, bench's own included, and follows a change
    with a 60 s time constant. Bench's share is taken as `threads` busy since the first reading, averaged the
    same way: an upper bound (its threads also wait), so `others` is a lower bound on the other work. That
    work shares bench's cores when it exceeds the cores bench leaves free by more than LOAD_MARGIN.
    """

    def __init__(self, threads: int, log=None, clock=time.perf_counter):
        self.threads, self.log, self.clock, self.readings, self.start = threads, log, clock, [], None

    def read(self, when: str) -> dict | None:
        now = self.clock()
        self.start = now if self.start is None else self.start
        seen = machine_load()
        if seen is None:
            return None
        load, cores = seen
        own = self.threads * (1.0 - math.exp(-(now - self.start) / LOAD_WINDOW_S))
        others = max(0.0, load - own)
        reading = {"when": when, "seconds": round(now - self.start, 1), "load_1min": round(load, 2),
                   "machine_cores": cores, "bench_threads": self.threads, "bench_share": round(own, 2),
                   "others": round(others, 2), "shared": others > max(0, cores - self.threads) + LOAD_MARGIN}
        if reading["shared"] and self.log and not self.shared:
            self.log(f"other work shares the cores ({when}: 1-minute load {load:.2f} on {cores} cores, at most "
                     f"{own:.2f} of it bench's own {self.threads} thread(s)): its times will be unreliable")
        self.readings.append(reading)
        return reading

    @property
    def shared(self) -> bool:
        return any(r["shared"] for r in self.readings)

    def summary(self) -> dict:
        """The run's `load` field: whether other work shared the cores, and every reading."""
        return {"shared": self.shared, "margin_cores": LOAD_MARGIN, "readings": self.readings}


def cpu_name() -> str:
    """The processor's model name (lscpu's "Model name"), for the record."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown CPU"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()} ({len(usable_cpus())} cores)"

