"""How the towers meet: exchanges of activations between towers.

A cross layer (conv3, fc6, fc7, fc8) of tower t computes its own slice of outputs from all towers' maps, so
before it the towers' maps are gathered: forward, concatenate along channels in tower order; backward, each
tower's maps receive the sum of the gradients sent by every layer that read them (DESIGN.md, "The exchange").
"""
from __future__ import annotations

import torch


def gather_local(maps: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Single-process exchange: copy every tower's maps to `device` and concatenate them in tower order.

    Backward is autograd's own: the copy sends each slice of the gradient back to its tower's device, and
    a tower's maps read by both towers' cross layers accumulate the sum of both gradients.
    """
    return torch.cat([m.to(device, non_blocking=True) for m in maps], dim=1)
