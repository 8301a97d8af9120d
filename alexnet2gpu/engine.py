"""One training step, one training epoch, one evaluation pass; any layout, any dist.Context.

`train_step` is the real step (bench.py reuses it): forward, cross-entropy, backward, gradient average
over tower pairs, SGD step. Errors are the paper's: top-1 and top-5 error in percent; with ten crops the
softmax probabilities (not the logits) of the crops are averaged (paper §4.1).
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .data import to_model_input
from .errors import TrainError
from .progress import Progress


class NonFiniteLoss(TrainError):
    pass


@dataclass
class InputSpec:
    """How uint8 batches become model input: where, minus which mean, with which colour noise."""

    device: torch.device
    mean: torch.Tensor
    pca: str | None = None
    channels_last: bool = False
    amp: str | None = None  # "bf16" on CUDA

    def __call__(self, batch, train: bool) -> torch.Tensor:
        if batch.images is None:
            raise ValueError("this batch still holds JPEG bytes: pass it through InputSpec.decode first.")
        return to_model_input(batch.images, batch.alphas, self.mean, self.pca if train else None,
                              self.device, self.channels_last)

    def decode(self, batch):
        """A batch of JPEG bytes (FolderDataset(decode="gpu")) decoded and cropped on `device`, images no
        decoder can read dropped and named in batch.corrupt; any other batch as it is."""
        if getattr(batch, "encoded", None) is None:
            return batch
        from .gpu_decode import decode_batch  # imports torchvision's decoders only for the GPU data path
        return decode_batch(batch, self.device)

    def autocast(self):
        if self.amp == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def train_step(model, optimizer, images: torch.Tensor, targets: torch.Tensor, ctx=None, autocast=None,
               check_finite: bool = False, step: int = 0) -> torch.Tensor:
    """One SGD step on one batch; returns the (detached) loss. With check_finite, a NaN or infinite loss
    raises NonFiniteLoss on every rank before any weight changes (one device sync per step, and with several
    tower pairs one tiny all-reduce)."""
    with autocast or contextlib.nullcontext():
        logits = model(images)
    loss = F.cross_entropy(logits.float(), targets.to(logits.device, non_blocking=True))
    if check_finite:
        value = loss.item()
        bad = torch.tensor([0.0 if math.isfinite(value) else 1.0], dtype=torch.float64)
        if ctx is not None:
            ctx.sum_over_pairs(bad)  # every pair stops together, whichever pair's loss went bad
        if bad.item():
            what = value if not math.isfinite(value) else "non-finite on another tower pair"
            raise NonFiniteLoss(f"the training loss became {what} at step {step}; weights were not updated and "
                                "the last good checkpoint is kept: lower --lr or resume from that checkpoint.")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if ctx is not None:
        ctx.average_gradients(model.parameters())
    optimizer.step()
    return loss.detach()


@dataclass
class EpochStats:
    loss: float = 0.0
    images: int = 0  # over all tower pairs
    steps: int = 0
    seconds: float = 0.0
    step_seconds: float = 0.0
    decode_seconds: float = 0.0  # summed over the loader's workers (and over the pairs)
    extra: dict = field(default_factory=dict)


KILL_SWITCH = "ALEXNET2GPU_TEST_KILL"  # test hook, "RANK:STEP"


def _test_kill_switch(ctx, step: int) -> None:
    """For the fault tests only (tests/test_train_torchrun.py): with ALEXNET2GPU_TEST_KILL="RANK:STEP", rank
    RANK kills itself with SIGKILL just before training step STEP, in torchrun's first attempt only."""
    wanted = os.environ.get(KILL_SWITCH)
    if wanted and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0" and \
            wanted == f"{ctx.rank if ctx is not None else 0}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_one_epoch(model, optimizer, loader, spec: InputSpec, ctx, corrupt, total_images: int, desc: str,
                    first_step: int = 0, max_steps: int | None = None, show: bool = True) -> EpochStats:
    """Train over `loader`; stop early once the run's step count reaches max_steps."""
    model.train()
    stats = EpochStats()
    bar = Progress(total_images, desc, enabled=None if show else False)
    start = time.perf_counter()
    loss_sum = torch.zeros((), dtype=torch.float64)
    for batch in loader:
        corrupt.add(batch.corrupt)
        stats.decode_seconds += batch.seconds
        if len(batch) == 0:
            continue
        if max_steps is not None and first_step + stats.steps >= max_steps:
            break
        _test_kill_switch(ctx, first_step + stats.steps + 1)
        t = time.perf_counter()
        images = spec(batch, train=True)
        loss = train_step(model, optimizer, images, batch.targets, ctx, spec.autocast(), check_finite=True,
                          step=first_step + stats.steps + 1)
        _sync(spec.device)
        stats.step_seconds += time.perf_counter() - t
        loss_sum += loss.double().cpu() * len(batch)
        stats.images += len(batch)
        stats.steps += 1
        bar.update(len(batch), f"loss {loss.item():.3f}")
    bar.close()
    stats.seconds = time.perf_counter() - start
    # Each pair trained on its own share of the epoch: the epoch's figures are the sums over the pairs.
    totals = torch.tensor([float(loss_sum), stats.images, stats.decode_seconds], dtype=torch.float64)
    if ctx is not None:
        ctx.sum_over_pairs(totals)
    stats.images, stats.decode_seconds = int(totals[1]), float(totals[2])
    stats.loss = float(totals[0]) / max(1, stats.images)
    return stats


@torch.no_grad()
def evaluate(model, loader, spec: InputSpec, ctx, corrupt, num_classes: int, total_images: int = 0,
             desc: str = "val", show: bool = True) -> dict:
    """Loss and top-1/top-5 error (percent). Ten-crop batches (N x 10 x C x H x W) average the crops'
    softmax probabilities. Sums are added up over tower pairs when there are several."""
    model.eval()
    k = min(5, num_classes)
    sums = torch.zeros(4, dtype=torch.float64)  # loss, top-1 wrong, top-k wrong, images
    bar = Progress(total_images, desc, enabled=None if show else False)
    for batch in loader:
        corrupt.add(batch.corrupt)
        if len(batch) == 0:
            continue
        x = spec(batch, train=False)
        crops = x.shape[1] if x.dim() == 5 else 1
        with spec.autocast():
            logits = model(x.flatten(0, 1) if crops > 1 else x).float()
        probs = logits.softmax(dim=1).view(len(batch), crops, -1).mean(dim=1)
        targets = batch.targets.to(probs.device)
        topk = probs.topk(k, dim=1).indices
        sums += torch.tensor([
            float(F.nll_loss(probs.clamp_min(1e-12).log(), targets, reduction="sum")),
            float((topk[:, 0] != targets).sum()),
            float((topk != targets[:, None]).all(dim=1).sum()),
            len(batch)], dtype=torch.float64)
        bar.update(len(batch))
    bar.close()
    if ctx is not None:
        ctx.sum_over_pairs(sums)  # each pair holds a shard of the val set
    n = max(1.0, float(sums[3]))
    return dict(loss=float(sums[0]) / n, top1_error=100 * float(sums[1]) / n, top5_error=100 * float(sums[2]) / n,
                images=int(sums[3]))
