"""The two-device layout (tower 0 on one device, tower 1 on another, one process) and the mapping between
canonical (merged, caffe-shaped) tensors and per-tower tensors.

Canonical rows [t*half, (t+1)*half) of every layer up to fc7 belong to tower t (docs/paper.md §1); fc8 is one
layer held whole by tower 0, on GPU 0 as in cuda-convnet2's layers-imagenet-2gpu-model.cfg (`gpu=0`).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from alexnet2gpu.distributed.comm import gather_local
from alexnet2gpu.distributed.device import check_device

from ..layers import FC8, LAYERS, TOWERS, check_input
from ..stack import StackOptions, TowerStack
from .base import Layout

torch.fx.wrap("check_input")  # a leaf of torch.fx graphs, as in merged.py


def split_towers(canonical: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """Canonical tensors (weights, momentum, gradients...) -> one dict per tower; fc8 goes to tower 0."""
    parts: list[dict[str, torch.Tensor]] = [{} for _ in range(TOWERS)]
    for name, tensor in canonical.items():
        if name.startswith(FC8):
            parts[0][name] = tensor
        else:
            for t, piece in enumerate(tensor.chunk(TOWERS, dim=0)):
                parts[t][name] = piece
    return parts


def merge_towers(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Inverse of `split_towers` (tensors must be on one device)."""
    merged = {}
    for name, tensor in parts[0].items():
        merged[name] = tensor if name.startswith(FC8) else torch.cat([p[name] for p in parts], dim=0)
    return merged


def resolve_devices(devices) -> tuple[torch.device, torch.device]:
    """The two towers' devices: given, or cuda:0 and cuda:1 when this machine has two GPUs."""
    if devices is None:
        if torch.cuda.device_count() < 2:
            raise ValueError(
                f"the two-device layout needs two devices and this machine has {torch.cuda.device_count()} CUDA "
                "GPU(s): pass devices=('cpu', 'cpu') or ('cuda:0', 'cuda:0'), or use the merged layout."
            )
        devices = ("cuda:0", "cuda:1")
    if isinstance(devices, (str, torch.device)) or len(devices) != TOWERS:
        raise ValueError(f"devices must be two entries, one per tower, e.g. ('cuda:0', 'cuda:1'); got {devices!r}.")
    return tuple(check_device(d) for d in devices)


class TwoTowerAlexNet(Layout):
    """Tower 0 on `devices[0]`, tower 1 on `devices[1]`, fc8 and the logits on `devices[0]`; one process.

    Activations cross between the towers before conv3, fc6, fc7 and fc8 and nowhere else (paper §3.2);
    `exchanges` lists (layer, bytes received from the other tower) for the last forward pass.
    """

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, init: str = "paper", dropout: float = 0.5,
                 devices=None, options: StackOptions = StackOptions()):
        super().__init__(num_classes, in_channels, init)
        self.devices = resolve_devices(devices)
        self.exchanges: list[tuple[str, int]] = []
        with self.built_on_meta(init):
            self.towers = nn.ModuleList(TowerStack(1, in_channels, dropout, options) for _ in self.devices)
            self.fc8 = nn.Linear(LAYERS[-1].out * TOWERS, num_classes)

    def placement(self):
        return [*zip(self.towers, self.devices), (self.fc8, self.devices[0])]

    def _gather(self, layer: str, maps: list[torch.Tensor], tower: int) -> torch.Tensor:
        if not is_fx_symbolic_tracing():  # a graph has no sizes to count, and would not update the list
            received = sum(m.numel() * m.element_size() for t, m in enumerate(maps) if t != tower)
            self.exchanges.append((layer, received))
        return gather_local(maps, self.devices[tower])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """What fc8 reads: both towers' fc7 outputs after ReLU (and dropout in training), N x 4096 on the first
        device."""
        pad = check_input(x, self.in_channels, self.towers[0].conv1.weight, moved=True)
        self.exchanges = []
        towers = list(enumerate(self.towers))
        maps = [tower.features(x.to(self.devices[t], non_blocking=True), pad) for t, tower in towers]
        maps = [tower.conv_cross(self._gather("conv3", maps, t)) for t, tower in towers]
        for fc in ("fc6", "fc7"):
            maps = [tower.fully_connected(self._gather(fc, maps, t), fc) for t, tower in towers]
        return self._gather(FC8, maps, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc8(self.forward_features(x))

    def to_canonical(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Tensors keyed by this module's parameter names -> canonical names (merged, on the CPU)."""
        parts = [{} for _ in range(TOWERS)]
        for name, tensor in tensors.items():
            if name.startswith(FC8):
                parts[0][name] = tensor.cpu()
            else:
                _, t, key = name.split(".", 2)
                parts[int(t)][key] = tensor.cpu()
        return merge_towers(parts)

    def from_canonical(self, canonical: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for t, part in enumerate(split_towers(canonical)):
            for key, tensor in part.items():
                out[key if key.startswith(FC8) else f"towers.{t}.{key}"] = tensor
        return out
