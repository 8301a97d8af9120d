"""Memory layouts of N x C x H x W maps, as the convolutions and the Triton kernels walk them."""
from __future__ import annotations

import torch


def memory_format_of(t: torch.Tensor) -> torch.memory_format:
    """channels_last for a channels-last 4-d tensor that is not also contiguous, else contiguous_format."""
    return torch.channels_last if not t.is_contiguous() and t.is_contiguous(
        memory_format=torch.channels_last) else torch.contiguous_format


def plus_bias(z: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """z + bias per channel (dim 1), in z's dtype and layout; z itself without a bias."""
    return z if bias is None else z + bias.to(z.dtype).view(1, -1, 1, 1)


def dense(t: torch.Tensor) -> torch.Tensor:
    """t itself when it is channels-last or contiguous (what the Triton kernels walk), else a contiguous copy."""
    if t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last):
        return t
    return t.contiguous()
