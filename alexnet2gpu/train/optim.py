"""The paper's optimiser and learning-rate schedules (paper §5; docs/paper.md §4).

Update rule of the paper: v <- 0.9 v - 0.0005 lr w - lr dL/dw;  w <- w + v.
torch.optim.SGD (dampening 0, no Nesterov) keeps b with v = -lr b, so it is the same rule while lr is
constant. When lr changes the paper's velocity v keeps its value, so b must become b * lr_old / lr_new:
`set_lr` does that. Weight decay applies to weights; biases get none unless asked (the original code and
caffe use no decay on biases; the paper's text does not distinguish).
"""
from __future__ import annotations

import torch
from torch import nn


def make_optimizer(model: nn.Module, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4,
                   bias_decay: bool = False, fused: bool | None = None) -> torch.optim.SGD:
    """SGD over two groups: weights (with weight decay) and biases (decay only with bias_decay).

    fused (default: when every parameter is on a GPU): one kernel per device and dtype for the whole update,
    and it takes a `found_inf` flag on the device, which is how a non-finite loss skips the update without
    the host waiting for the GPU (engine.FiniteGuard)."""
    weights = [p for n, p in model.named_parameters() if not n.endswith("bias")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    groups = [dict(params=weights, weight_decay=weight_decay),
              dict(params=biases, weight_decay=weight_decay if bias_decay else 0.0)]
    if fused is None:
        fused = all(p.device.type == "cuda" for p in weights + biases)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, dampening=0.0, nesterov=False, fused=fused or None)


def get_lr(optimizer: torch.optim.Optimizer) -> float:
    return optimizer.param_groups[0]["lr"]


@torch.no_grad()
def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Change the learning rate keeping the paper's velocity v = -lr * buffer unchanged."""
    for group in optimizer.param_groups:
        old = group["lr"]
        if old != lr:
            for p in group["params"]:
                buf = optimizer.state.get(p, {}).get("momentum_buffer")
                if buf is not None:
                    buf.mul_(old / lr)
        group["lr"] = lr


def momentum_buffers(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Momentum buffers keyed by parameter name (zeros before the first step), for canonical checkpoints."""
    out = {}
    for name, p in model.named_parameters():
        buf = optimizer.state.get(p, {}).get("momentum_buffer")
        out[name] = (buf if buf is not None else torch.zeros_like(p)).detach()
    return out


@torch.no_grad()
def load_momentum_buffers(model: nn.Module, optimizer: torch.optim.Optimizer, buffers: dict[str, torch.Tensor]) -> None:
    for name, p in model.named_parameters():
        optimizer.state[p]["momentum_buffer"] = buffers[name].to(device=p.device, dtype=p.dtype).clone()


class PlateauSchedule:
    """Divide lr by `factor` when validation error has not improved for `patience` epochs, at most
    `max_drops` times (paper §5: "divided by 10 when the validation error rate stopped improving ...
    reduced three times prior to termination")."""

    def __init__(self, lr: float, patience: int = 5, factor: float = 10.0, max_drops: int = 3, threshold: float = 1e-3):
        self.lr, self.patience, self.factor, self.max_drops, self.threshold = lr, patience, factor, max_drops, threshold
        self.best = float("inf")
        self.bad_epochs = 0
        self.drops = 0

    def step(self, epoch: int, val_error: float) -> float:
        """Record the error of the epoch just finished; return the lr for the next epoch."""
        if val_error < self.best - self.threshold:
            self.best, self.bad_epochs = val_error, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= self.patience and self.drops < self.max_drops:
                self.lr /= self.factor
                self.drops += 1
                self.bad_epochs = 0
        return self.lr

    def state_dict(self) -> dict:
        return dict(kind="plateau", lr=self.lr, best=self.best, bad_epochs=self.bad_epochs, drops=self.drops)

    def load_state_dict(self, state: dict) -> None:
        self.lr, self.best, self.bad_epochs, self.drops = state["lr"], state["best"], state["bad_epochs"], state["drops"]

    def dropped(self, epoch: int) -> int:
        """The drops made by the end of `epoch` (the epochs done so far)."""
        return self.drops

    def base(self, epoch: int) -> float:
        """The lr before any drop."""
        return self.lr * self.factor ** self.dropped(epoch)

    def rebase(self, lr: float, epoch: int) -> None:
        """Go on from another base lr (a resume given --lr): the drops so far divide it."""
        self.lr = lr / self.factor ** self.dropped(epoch)


class StepSchedule:
    """Divide lr by `factor` after each epoch listed in `milestones` (1-based epochs just finished)."""

    def __init__(self, lr: float, milestones: list[int], factor: float = 10.0):
        self.base_lr, self.milestones, self.factor = lr, sorted(milestones), factor
        self.lr = lr

    def step(self, epoch: int, val_error: float) -> float:
        self.lr = self.base_lr / self.factor ** sum(1 for m in self.milestones if epoch >= m)
        return self.lr

    def state_dict(self) -> dict:
        return dict(kind="step", lr=self.lr)

    def load_state_dict(self, state: dict) -> None:
        self.lr = state["lr"]

    def dropped(self, epoch: int) -> int:
        return sum(1 for m in self.milestones if epoch >= m)

    def base(self, epoch: int) -> float:
        return self.lr * self.factor ** self.dropped(epoch)

    def rebase(self, lr: float, epoch: int) -> None:
        """The base later drops divide: on resume the checkpoint's (its lr x the drops so far), not the one the
        settings give now, unless --lr changed it."""
        self.base_lr = lr
        self.lr = lr / self.factor ** self.dropped(epoch)


def make_schedule(kind: str, lr: float, patience: int = 5, milestones=()) -> PlateauSchedule | StepSchedule:
    if kind == "plateau":
        return PlateauSchedule(lr, patience=patience)
    if kind == "step":
        if not milestones:
            raise ValueError("the step schedule needs epochs to divide lr at: pass e.g. --lr-steps 30,60,80.")
        return StepSchedule(lr, list(milestones))
    raise ValueError(f"unknown schedule {kind!r}: choose plateau or step.")
