"""Build any layout by name: the one place that knows every layout."""
from __future__ import annotations

from torch import nn

from .model import AlexNet
from .towers import TwoTowerAlexNet, check_device

LAYOUTS = ("merged", "two-device", "tower-parallel")


def build_model(layout: str, num_classes: int = 1000, in_channels: int = 3, init: str = "paper",
                dropout: float = 0.5, device="cpu", devices=None, ctx=None) -> nn.Module:
    """`device` places the merged layout; `devices` the two towers of the two-device layout; `ctx` (a
    dist.Context) says which tower this process holds in the tower-parallel layout."""
    if layout == "merged":
        return AlexNet(num_classes, in_channels, init, dropout).to(check_device(device))
    if layout == "two-device":
        return TwoTowerAlexNet(num_classes, in_channels, init, dropout, devices=devices)
    if layout == "tower-parallel":
        raise NotImplementedError("the tower-parallel layout is not built yet")
    raise ValueError(f"unknown layout {layout!r}: choose one of {', '.join(LAYOUTS)}.")
