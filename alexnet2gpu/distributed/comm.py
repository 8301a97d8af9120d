"""How the towers meet: exchanges of activations between towers.

A cross layer (conv3, fc6, fc7, fc8) of tower t computes its own slice of outputs from all towers' maps, so
before it the towers' maps are gathered: forward, concatenate along channels in tower order; backward, each
tower's maps receive the sum of the gradients sent by every layer that read them.

One function per communication pattern (in the manner of Megatron-LM's tensor_parallel/mappings.py), each
stating its forward and backward math and each the identity for a group of one (or no group). Below, T is the
number of towers in `group` (its size), t this process's rank in it (its tower), x_t tower t's input and L
the loss, computed identically by every tower of the group.

NCCL moves CUDA tensors and gloo moves CPU tensors (gloo is what ranks sharing one GPU must use: NCCL
refuses two ranks on one device), so every collective here stages its tensors on the backend's device and
hands results back on the caller's device.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def gather_local(maps: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Single-process exchange: copy every tower's maps to `device` and concatenate them in tower order.

    Backward is autograd's own: the copy sends each slice of the gradient back to its tower's device, and
    a tower's maps read by both towers' cross layers accumulate the sum of both gradients.
    """
    return torch.cat([m.to(device, non_blocking=True) for m in maps], dim=1)


def group_size(group) -> int:
    """Processes in `group`; 1 for no group (a single process holds every tower)."""
    return 1 if group is None else dist.get_world_size(group)


def on_backend(t: torch.Tensor, group) -> torch.Tensor:
    """`t` on the device `group`'s backend moves (gloo: CPU, NCCL: this rank's GPU), contiguous."""
    backend = dist.get_backend(group)
    if backend == "gloo" and t.is_cuda:
        return t.cpu()
    if backend == "nccl" and not t.is_cuda:
        return t.cuda()
    return t.contiguous()


def _all_gather(x: torch.Tensor, group) -> list[torch.Tensor]:
    x = on_backend(x, group)
    parts = [torch.empty_like(x) for _ in range(group_size(group))]
    dist.all_gather(parts, x, group=group)
    return parts


def _chunks(grad: torch.Tensor, group) -> list[torch.Tensor]:
    """`grad` cut along channels into one contiguous slice per tower, staged for the backend."""
    return [c.contiguous() for c in on_backend(grad, group).chunk(group_size(group), dim=1)]


class _GatherFromTowers(torch.autograd.Function):
    """All-gather along channels, reduce-scatter of the gradient: the exchange before conv3, fc6 and fc7.

    forward:  y = cat(x_0, ..., x_{T-1}) along dim 1, the same on every tower.
    backward: dL/dx_t = sum over towers s of (dL/dy as seen by tower s)[:, slice t]: every tower's cross
              layer read x_t, so x_t's gradient is the sum of what each of them sent it.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, group):
        ctx.group = group
        return torch.cat(_all_gather(x, group), dim=1).to(x.device)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        chunks = _chunks(grad, ctx.group)
        own = torch.empty_like(chunks[0])
        dist.reduce_scatter(own, chunks, group=ctx.group)
        return own.to(grad.device), None


def gather_from_towers(x: torch.Tensor, group) -> torch.Tensor:
    """Every tower's maps, concatenated along channels in tower order, on every tower (see _GatherFromTowers)."""
    return x if group_size(group) == 1 else _GatherFromTowers.apply(x, group)


class _GatherToFirstTower(torch.autograd.Function):
    """Gather along channels onto tower 0, scatter of the gradient: the exchange before fc8, which tower 0 holds.

    forward:  tower 0: y = cat(x_0, ..., x_{T-1}) along dim 1. Tower t > 0: y = x_t unchanged; it reads
              nothing downstream and only carries the autograd graph to `share_from_first_tower`.
    backward: tower 0: dL/dx_0 = g[:, slice 0], and g[:, slice t] is sent to tower t.
              tower t > 0: dL/dx_t = the slice received from tower 0; its own incoming gradient (zeros,
              from share_from_first_tower) is ignored, since only tower 0 used the gathered maps.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, group):
        ctx.group, ctx.first = group, dist.get_rank(group) == 0
        staged = on_backend(x, group)
        parts = [torch.empty_like(staged) for _ in range(group_size(group))] if ctx.first else None
        dist.gather(staged, parts, group=group, group_dst=0)
        return torch.cat(parts, dim=1).to(x.device) if ctx.first else x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if ctx.first:
            chunks = _chunks(grad, ctx.group)
            own = torch.empty_like(chunks[0])
        else:
            chunks, own = None, torch.empty_like(on_backend(grad, ctx.group))
        dist.scatter(own, chunks, group=ctx.group, group_src=0)
        return own.to(grad.device), None


def gather_to_first_tower(x: torch.Tensor, group) -> torch.Tensor:
    """Tower 0: all towers' maps along channels; other towers: their own maps (see _GatherToFirstTower)."""
    return x if group_size(group) == 1 else _GatherToFirstTower.apply(x, group)


class _ShareFromFirstTower(torch.autograd.Function):
    """Broadcast from tower 0, plain gradient: hands tower 0's result (the logits) to every tower.

    forward:  every tower: y = y_0, tower 0's input. A tower t > 0 passes a tensor from its own graph (its
              x_t from gather_to_first_tower) only so that its backward reaches its own layers.
    backward: tower 0: dL/dy_0 = g, its own gradient, unchanged; tower t > 0: zeros. Every tower computes the
              same loss L from the same y, so tower 0's copy alone carries dL/dy; summing the towers'
              copies would multiply the gradient by T.
    """

    @staticmethod
    def forward(ctx, y: torch.Tensor, group, shape: tuple[int, ...]):
        ctx.group, ctx.first, ctx.input_shape = group, dist.get_rank(group) == 0, y.shape
        out = on_backend(y, group) if ctx.first else on_backend(y.new_empty(shape), group)
        dist.broadcast(out, group=group, group_src=0)
        return out.to(y.device, copy=ctx.first)  # a fresh tensor on tower 0 too: outputs never alias inputs

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return (grad if ctx.first else grad.new_zeros(ctx.input_shape)), None, None


def share_from_first_tower(y: torch.Tensor, group, shape: tuple[int, ...]) -> torch.Tensor:
    """Tower 0's `y` (of `shape`) on every tower; other towers pass any tensor of their graph with y's dtype."""
    return y if group_size(group) == 1 else _ShareFromFirstTower.apply(y, group, tuple(shape))


# Weights and optimizer state (no autograd): collectives behind the collective state_dict / to_canonical.

def gather_rows(t: torch.Tensor, group) -> torch.Tensor:
    """Every tower's `t`, concatenated along dim 0 in tower order, on every tower: a new CPU tensor."""
    if group_size(group) == 1:
        return t.detach().to("cpu", copy=True)
    return torch.cat([p.cpu() for p in _all_gather(t.detach(), group)], dim=0)


def broadcast_from_first(t: torch.Tensor | None, group, like: torch.Tensor) -> torch.Tensor:
    """Tower 0's `t` on every tower, a new CPU tensor; other towers pass None and `like` (shape, dtype)."""
    if group_size(group) == 1:
        return t.detach().to("cpu", copy=True)
    out = on_backend(t.detach(), group) if dist.get_rank(group) == 0 else on_backend(torch.empty_like(like), group)
    dist.broadcast(out, group=group, group_src=0)
    return out.to("cpu", copy=True)  # never the caller's own tensor: a snapshot, as gather_rows gives
