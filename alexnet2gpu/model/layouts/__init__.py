"""Build any layout by name: the one place that knows every layout."""
from __future__ import annotations

from torch import nn

from alexnet2gpu.distributed.device import check_device

from ..stack import StackOptions
from .merged import AlexNet
from .tower_parallel import TowerParallelAlexNet
from .two_device import TwoTowerAlexNet

LAYOUTS = ("merged", "two-device", "tower-parallel")


def build_model(layout: str, num_classes: int = 1000, in_channels: int = 3, init: str = "paper",
                dropout: float = 0.5, device="cpu", devices=None, ctx=None,
                options: StackOptions = StackOptions()) -> nn.Module:
    """`device` places the merged layout; `devices` the two towers of the two-device layout; `ctx` (a
    world.Context from world.setup) says which tower this process holds in the tower-parallel layout, which
    places it on `ctx.device`; `options` chooses how the towers' layers are computed (model.StackOptions)."""
    if layout == "merged":
        return AlexNet(num_classes, in_channels, init, dropout, options).to(check_device(device))
    if layout == "two-device":
        return TwoTowerAlexNet(num_classes, in_channels, init, dropout, devices=devices, options=options)
    if layout == "tower-parallel":
        return TowerParallelAlexNet(num_classes, in_channels, init, dropout, ctx=ctx, options=options)
    raise ValueError(f"unknown layout {layout!r}: choose one of {', '.join(LAYOUTS)}.")


def resolve_layout(requested: str | None, ctx) -> str:
    """The layout for this process: tower-parallel in a torchrun world of several processes, otherwise the
    requested one (merged when none was asked for)."""
    if ctx is not None and ctx.distributed:
        if requested not in (None, "tower-parallel"):
            raise ValueError(f"with {ctx.world_size} processes every rank holds one tower, so the layout is "
                             f"tower-parallel, not {requested!r}: drop the layout option, or run one process.")
        return "tower-parallel"
    if requested == "tower-parallel":
        raise ValueError("the tower-parallel layout needs one process per tower: launch with "
                         "torchrun --standalone --nproc_per_node=2 (or 4, 6 ...), or choose merged or two-device.")
    if requested is not None and requested not in LAYOUTS:
        raise ValueError(f"unknown layout {requested!r}: choose one of {', '.join(LAYOUTS)}.")
    return requested or "merged"
