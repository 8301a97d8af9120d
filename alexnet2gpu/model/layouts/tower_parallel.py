"""The tower-parallel layout: one tower per process (rank), the towers meeting over torch.distributed.

Rank 2p + t holds tower t of pair p (world.setup): `TowerStack(1)`, and on tower-0 ranks fc8, as in
cuda-convnet2's layers-imagenet-2gpu-model.cfg (`gpu=0`). The towers exchange activations only before conv3,
fc6, fc7 (all-gather; gradients summed back, comm.gather_from_towers) and fc8 (tower 1's fc7 output to
tower 0, comm.gather_to_first_tower); tower 0 then shares the logits (comm.share_from_first_tower) so both
ranks of a pair compute the same loss and training code needs no knowledge of the layout (paper §3.2).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from alexnet2gpu.distributed.comm import (broadcast_from_first, gather_from_towers, gather_rows, gather_to_first_tower,
                                          share_from_first_tower)
from alexnet2gpu.distributed.device import check_device

from ..layers import FC8, LAYERS, TOWERS, canonical_shapes, check_input
from ..stack import StackOptions, TowerStack
from .base import Layout
from .two_device import split_towers


class TowerParallelAlexNet(Layout):
    """This rank's tower of AlexNet; `forward` returns the whole network's logits, the same on both ranks.

    `state_dict`, `to_canonical` are collective: both ranks of the pair (in practice every rank) must call
    them, and each gets the full canonical dict. `load_state_dict` and `from_canonical` take the full
    canonical dict on every rank (every rank reads the checkpoint) and keep this rank's slice. `exchanges` lists (layer, bytes this rank
    received) for the last forward pass; the backward pass moves the same amounts the other way.
    """

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, init: str = "paper", dropout: float = 0.5,
                 ctx=None, device=None, options: StackOptions = StackOptions()):
        super().__init__(num_classes, in_channels, init)
        if ctx is None or ctx.tower is None or ctx.tower_group is None:
            raise ValueError("the tower-parallel layout needs the Context of world.setup() in a world of 2, 4, ... "
                             "processes (torchrun --nproc_per_node=2 ...); a single process uses layout 'merged'.")
        self.tower, self.group = ctx.tower, ctx.tower_group
        self.device = check_device(ctx.device if device is None else device)
        self.exchanges: list[tuple[str, int]] = []
        # Every rank draws the whole canonical init (same seed => same weights) and keeps its slice, so all
        # layouts and world sizes start from identical weights.
        with self.built_on_meta(init):
            self.stack = TowerStack(1, in_channels, dropout, options)
            self.fc8 = nn.Linear(LAYERS[-1].out * TOWERS, num_classes) if self.tower == 0 else None

    def placement(self):
        return [(self, self.device)]

    def _received(self, layer: str, maps: torch.Tensor, towers_sending: int) -> None:
        self.exchanges.append((layer, maps.numel() * maps.element_size() * towers_sending))

    def _fc7(self, x: torch.Tensor) -> torch.Tensor:
        """This tower's fc7 output (after ReLU and dropout), N x 2048; `exchanges` starts afresh."""
        pad = check_input(x, self.in_channels, self.stack.conv1.weight, moved=True)
        self.exchanges = []
        h = self.stack.features(x.to(self.device, non_blocking=True), pad)
        self._received("conv3", h, TOWERS - 1)
        h = self.stack.conv_cross(gather_from_towers(h, self.group))
        for fc in ("fc6", "fc7"):
            self._received(fc, h, TOWERS - 1)
            h = self.stack.fully_connected(gather_from_towers(h, self.group), fc)
        return h

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """What fc8 reads, N x 4096, on every rank: both towers' fc7 outputs, gathered as before conv3, fc6 and
        fc7 (gradients summed back to each tower). Collective, like `forward`."""
        h = self._fc7(x)
        self._received("features", h, TOWERS - 1)
        return gather_from_towers(h, self.group)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._fc7(x)
        first = self.tower == 0
        self._received(FC8, h, TOWERS - 1 if first else 0)
        h = gather_to_first_tower(h, self.group)
        logits = self.fc8(h) if first else h  # tower 1's h only carries its graph into the shared logits
        shape = (x.shape[0], self.num_classes)
        logits = share_from_first_tower(logits, self.group, shape)
        self._received("logits", logits, 0 if first else 1)
        return logits

    def to_canonical(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Collective. Tensors keyed by this rank's parameter names (weights, gradients, momentum buffers; the
        same names on both towers, plus fc8 on tower 0) -> the full canonical dict on every rank, on the CPU."""
        local = {name.removeprefix("stack."): t for name, t in tensors.items()}
        described = {name: (tuple(t.shape), t.dtype) for name, t in local.items()}
        everyone: list = [None] * TOWERS
        dist.all_gather_object(everyone, described, group=self.group)
        first = {name: d for name, d in everyone[0].items() if not name.startswith(FC8)}
        if any(set(first) != set(other) for other in everyone[1:]):
            raise ValueError("to_canonical needs tensors for the same parameters on both towers of a pair: "
                             "pass every parameter's tensor (fc8's on tower 0 only) on every rank.")
        canonical = {}
        for name in canonical_shapes(self.num_classes, self.in_channels):
            if name not in everyone[0]:
                continue
            if name.startswith(FC8):
                shape, dtype = everyone[0][name]
                canonical[name] = broadcast_from_first(local.get(name), self.group, torch.empty(shape, dtype=dtype))
            else:
                canonical[name] = gather_rows(local[name], self.group)
        return canonical

    def from_canonical(self, canonical: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This rank's slice of canonical tensors, keyed by its parameter names (no communication)."""
        part = split_towers(canonical)[self.tower]
        return {(name if name.startswith(FC8) else "stack." + name): t for name, t in part.items()}
