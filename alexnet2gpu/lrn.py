"""Local response normalisation per tower (paper §3.3, PAPER.md §2).

b_i = a_i / (k + alpha/n * sum_{j=i-n/2}^{i+n/2} a_j^2)^beta, the window clipped at each tower's edges.
alpha is divided by n as in the original code (cuda-convnet2 layer.py `scale /= size`) and as
torch.nn.LocalResponseNorm does, so the paper's printed constants give the network that produced its results.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def local_response_norm(x: torch.Tensor, towers: int, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """LRN over channels of each tower separately: x is N x (towers*C) x H x W, tower t owns channels [tC, (t+1)C)."""
    if towers == 1:
        return F.local_response_norm(x, size, alpha, beta, k)
    n, c, h, w = x.shape
    # Tower channel blocks are contiguous, so N x 2C becomes 2N x C: one call, no mixing across the border.
    y = F.local_response_norm(x.reshape(n * towers, c // towers, h, w), size, alpha, beta, k)
    return y.reshape(n, c, h, w)


def lrn_reference(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """The formula written out channel by channel (slow; for tests)."""
    channels = x.shape[1]
    out = torch.empty_like(x)
    for i in range(channels):
        lo, hi = max(0, i - size // 2), min(channels, i + size // 2 + 1)
        s = (x[:, lo:hi] ** 2).sum(dim=1)
        out[:, i] = x[:, i] / (k + alpha / size * s) ** beta
    return out
