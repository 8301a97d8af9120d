"""One training step, one training epoch, one evaluation pass; any layout, any world.Context.

`train_step` is the real step (bench.py reuses it): forward, cross-entropy, backward, gradient average
over tower pairs, SGD step. Errors are the paper's: top-1 and top-5 error in percent; with ten crops the
softmax probabilities (not the logits) of the crops are averaged (paper §4.1).
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from alexnet2gpu.data.device_input import InputSpec, crop_probabilities
from alexnet2gpu.distributed.device import synchronize
from alexnet2gpu.errors import TrainError
from alexnet2gpu.progress import Progress


class NonFiniteLoss(TrainError):
    pass


class FiniteGuard:
    """Keeps a non-finite training loss from ever updating the weights, and names the step it happened at.

    `immediate` (the CPU): read the loss every step and raise before the update (a CPU has no queue to stall).
    Deferred (CUDA with a fused optimiser): never wait for the device. A flag on the device turns 1 at the
    first non-finite loss and stays 1; it is the fused SGD's `found_inf`, so that step's update and every
    later one are skipped on the device; `check()`, called at the log interval and at the end of an epoch,
    reads it and raises. With several tower pairs the flag is summed over the pairs on the device, so every
    pair skips and stops together, whichever pair's loss went bad.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device, immediate: bool | None = None):
        fused = bool(optimizer.defaults.get("fused"))
        self.immediate = (device.type != "cuda" or not fused) if immediate is None else immediate
        if not self.immediate and not fused:
            raise ValueError("a deferred non-finite check needs a fused optimiser (make_optimizer(..., fused=True)).")
        self.optimizer = optimizer
        self.bad = torch.zeros((), device=device)  # 1.0 from the first non-finite loss on
        self.first = torch.zeros(2, dtype=torch.float64, device=device)  # (step, loss) of that first one

    def observe(self, loss: torch.Tensor, step: int, ctx=None) -> None:
        """Before the update of `step`: stop it (and every later one) if `loss` is not finite."""
        if self.immediate:
            value = loss.item()
            bad = torch.tensor([0.0 if math.isfinite(value) else 1.0], dtype=torch.float64)
            if ctx is not None:
                ctx.sum_over_pairs(bad)
            if bad.item():
                raise _non_finite(step, value if not math.isfinite(value) else None)
            return
        bad_now = (~torch.isfinite(loss.detach())).float().reshape(())
        if ctx is not None:
            ctx.sum_over_pairs(bad_now)
        newly = (bad_now > 0) & (self.bad == 0)
        # torch.full, not torch.tensor: a fill kernel, where a copy from the host would wait for the device
        here = torch.stack([torch.full((), float(step), dtype=torch.float64, device=loss.device),
                            loss.detach().double().reshape(())])
        self.first = torch.where(newly, here, self.first)
        self.bad = torch.maximum(self.bad, (bad_now > 0).float())
        self.optimizer.found_inf = self.bad  # fused SGD skips its step while this is 1

    def check(self) -> None:
        """Raise NonFiniteLoss if a loss went non-finite since the start (one device read when deferred)."""
        if not self.immediate and self.bad.item():
            step, value = self.first.tolist()
            raise _non_finite(int(step), value if not math.isfinite(value) else None)


def _non_finite(step: int, value: float | None) -> NonFiniteLoss:
    what = value if value is not None else "non-finite on another tower pair"
    return NonFiniteLoss(f"the training loss became {what} at step {step}, and the weights took no update from it")


def forward_backward(model, images: torch.Tensor, targets: torch.Tensor, autocast=None) -> torch.Tensor:
    """Forward, cross-entropy and backward into fresh gradients; returns the detached loss, on the device."""
    model.zero_grad(set_to_none=True)
    with autocast or contextlib.nullcontext():
        logits = model(images)
    loss = F.cross_entropy(logits.float(), targets.to(logits.device, non_blocking=True))
    loss.backward()
    return loss.detach()


def train_step(model, optimizer, images: torch.Tensor, targets: torch.Tensor, ctx=None, autocast=None,
               guard: FiniteGuard | None = None, step: int = 0, graphed=None) -> torch.Tensor:
    """One SGD step on one batch; returns the (detached) loss, still on the device: reading it waits for the
    step. With a `guard`, a NaN or infinite loss never updates the weights (see FiniteGuard). With `graphed`
    (a cuda_graphs.GraphedStep), the forward and backward of every batch it takes replay its CUDA graph."""
    if graphed is not None and graphed.takes(images, targets):
        loss = graphed(images, targets, autocast)
    else:
        loss = forward_backward(model, images, targets, autocast)
    if guard is not None:
        guard.observe(loss, step, ctx)
    if ctx is not None:
        ctx.average_gradients(model.parameters())
    optimizer.step()
    return loss


@dataclass
class EpochStats:
    loss: float = 0.0
    images: int = 0  # over all tower pairs
    steps: int = 0
    seconds: float = 0.0
    step_seconds: float = 0.0
    decode_seconds: float = 0.0  # summed over the loader's workers (and over the pairs)
    wait_seconds: float = 0.0  # the training loop waiting for the loader (this process)


# Called as hook(ctx, step) just before each training step; empty unless a test installs a fault here
# (tests/train_with_a_fault.py).
STEP_HOOKS: list = []


READ_SECONDS = 1.0  # how often the training loop reads the device (progress bar loss, non-finite check)


def train_one_epoch(model, optimizer, loader, spec: InputSpec, *, corrupt, total_images: int, desc: str, ctx=None,
                    first_step: int = 0, max_steps: int | None = None, show: bool = True, log=None,
                    graphed=None, batch_size: int | None = None) -> EpochStats:
    """Train over `loader`; stop early once the run's step count reaches max_steps. `corrupt` (a
    data.folders.CorruptLog) records the unreadable images; `total_images` and `desc` are the progress bar's, which
    `show` turns off; `ctx` (a world.Context) averages the gradients over tower pairs; `graphed` (a
    cuda_graphs.GraphedStep, kept from epoch to epoch) replays the forward and backward from a CUDA graph.
    `batch_size` lets the bar count to max_steps when the run stops there (`bar_total`).

    The loop never waits for the device except every READ_SECONDS (the progress bar's loss and the
    non-finite check), when `log` (a batch_log.StepLog) has a line due, and at the end of the epoch: losses
    are summed on the device. `step_seconds` is the epoch's time less the time spent waiting for the loader.
    """
    model.train()
    stats = EpochStats()
    guard = FiniteGuard(optimizer, spec.device)
    total = bar_total(total_images, batch_size, first_step, max_steps)
    if total < total_images:
        desc = f"{desc} to --max-steps (step {max_steps})"
    bar = Progress(total, desc, enabled=None if show else False)
    start = last_read = time.perf_counter()
    loss_sum = torch.zeros((), dtype=torch.float64, device=spec.device)
    batches = spec.batches(_counted(loader, corrupt, stats), train=True)
    while True:
        wait = time.perf_counter()
        batch, images, targets = next(batches, (None, None, None))
        stats.wait_seconds += time.perf_counter() - wait
        if batch is None or (max_steps is not None and first_step + stats.steps >= max_steps):
            break
        step = first_step + stats.steps + 1
        for hook in STEP_HOOKS:
            hook(ctx, step)
        loss = train_step(model, optimizer, images, targets, ctx, spec.autocast(), guard, step, graphed)
        loss_sum += loss.double() * len(batch)
        stats.images += len(batch)
        stats.steps += 1
        text = ""
        log_due = log is not None and log.due(step, time.perf_counter())
        if log_due or time.perf_counter() - last_read >= READ_SECONDS:
            guard.check()
            value = loss.item()
            text, last_read = f"loss {value:.3f}", time.perf_counter()
            if log_due:
                log.record(step, value, stats.images, stats.wait_seconds, last_read)
        bar.update(len(batch), text)
    guard.check()
    synchronize(spec.device)
    bar.close()
    stats.seconds = time.perf_counter() - start
    stats.step_seconds = stats.seconds - stats.wait_seconds
    # Each pair trained on its own share of the epoch: the epoch's figures are the sums over the pairs.
    totals = torch.tensor([float(loss_sum), stats.images, stats.decode_seconds], dtype=torch.float64)
    if ctx is not None:
        ctx.sum_over_pairs(totals)
    stats.images, stats.decode_seconds = int(totals[1]), float(totals[2])
    stats.loss = float(totals[0]) / max(1, stats.images)
    return stats


def bar_total(total_images: int, batch_size: int | None, first_step: int, max_steps: int | None) -> int:
    """The images the epoch's progress bar (and so its ETA) counts to: the epoch's, or those of the steps left
    when the run stops at `max_steps` inside it."""
    if max_steps is None or not batch_size:
        return total_images
    return min(total_images, max(0, max_steps - first_step) * batch_size)


def _counted(loader, corrupt, stats: EpochStats | None = None, skipped: list | None = None):
    """The loader's batches with images; every batch's unreadable paths (and decode time) are recorded, and
    counted in skipped[0] when given."""
    for batch in loader:
        corrupt.add(batch.corrupt, getattr(batch, "reasons", None))
        if skipped is not None:
            skipped[0] += len(batch.corrupt)
        if stats is not None:
            stats.decode_seconds += batch.seconds
        if len(batch):
            yield batch


@torch.no_grad()
def evaluate(model, loader, spec: InputSpec, *, corrupt, num_classes: int, ctx=None, total_images: int = 0,
             desc: str = "val", show: bool = True) -> dict:
    """Loss and top-1/top-5 error (percent) over the images read, and `skipped`, the unreadable ones left out;
    top5_error is None with 5 classes or fewer (`has_top5`).
    Ten-crop batches (N x 10 x C x H x W) average the crops' softmax probabilities. Sums are added up over
    tower pairs when there are several."""
    model.eval()
    k = min(5, num_classes)
    sums = torch.zeros(3, dtype=torch.float64, device=spec.device)  # loss, top-1 wrong, top-k wrong; read once
    images, skipped = 0, [0]
    bar = Progress(total_images, desc, enabled=None if show else False)
    for batch, x, targets in spec.batches(_counted(loader, corrupt, skipped=skipped), train=False):
        probs = crop_probabilities(model, x, spec)
        targets = targets.to(probs.device)
        topk = probs.topk(k, dim=1).indices
        sums += torch.stack([F.nll_loss(probs.clamp_min(1e-12).log(), targets, reduction="sum").double(),
                             (topk[:, 0] != targets).sum().double(),
                             (topk != targets[:, None]).all(dim=1).sum().double()])
        images += len(batch)
        bar.update(len(batch))
    bar.close()
    totals = torch.tensor(sums.tolist() + [images, skipped[0]], dtype=torch.float64)
    if ctx is not None:
        ctx.sum_over_pairs(totals)  # each pair holds a shard of the val set
    n = max(1.0, float(totals[3]))
    top5 = 100 * float(totals[2]) / n if has_top5(num_classes) else None
    return dict(loss=float(totals[0]) / n, top1_error=100 * float(totals[1]) / n, top5_error=top5,
                images=int(totals[3]), skipped=int(totals[4]))


def has_top5(num_classes: int) -> bool:
    """Whether a top-5 error means something: with 5 classes or fewer the five most probable hold every class,
    so it is 0 whatever the weights (top-5: the right label not among the five most probable, paper §2)."""
    return num_classes > 5
