"""Local response normalisation per tower (paper §3.3, PAPER.md §2).

b_i = a_i / (k + alpha/n * sum_{j=i-n/2}^{i+n/2} a_j^2)^beta, the window clipped at each tower's edges.
alpha is divided by n as in the original code (cuda-convnet2 layer.py `scale /= size`) and as
torch.nn.LocalResponseNorm does, so the paper's printed constants give the network that produced its results.

Why a hand-written autograd function: `F.local_response_norm` is a composite of ~8 operations (pad,
avg_pool3d, pow, div...) that autograd differentiates one by one; on a 2-core CPU it was 40-47 % of a
training step of the merged net (DESIGN.md, platform facts). `LRNFunction` does the window sum with three
shifted adds over a zero-padded buffer and applies the closed-form backward

    d_j = k + alpha/n * sum_{i in win(j)} a_i^2,    b_j = a_j d_j^-beta,
    dL/da_i = g_i d_i^-beta - 2 beta alpha/n * a_i * sum_{j in win(i)} g_j b_j / d_j

(the window is symmetric, so the backward's sum is the same window sum), saving only a, b, d and d^-beta.
`lrn_reference` is the formula written out channel by channel, kept for the tests.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

LRN_IMPLS = ("fast", "native", "compiled")


def _window_sum(sq_padded: torch.Tensor, size: int) -> torch.Tensor:
    """Sum over a window of `size` channels along dim 2 of a buffer padded with size//2 zeros on both sides.

    Repeated doubling: windows of 1 -> 2 -> 4 (-> 5 with one more add) for size 5, one pass per add;
    any odd size falls back to size-1 plain shifted adds.
    """
    c = sq_padded.shape[2] - (size - 1)
    if size == 5:
        pairs = sq_padded[:, :, :-1] + sq_padded[:, :, 1:]  # c + 3 windows of 2
        fours = pairs[:, :, :-2] + pairs[:, :, 2:]  # c + 1 windows of 4
        return torch.add(fours[:, :, :c], sq_padded[:, :, 4:])
    total = sq_padded[:, :, :c].clone()
    for shift in range(1, size):
        total += sq_padded[:, :, shift:shift + c]
    return total


def _padded_like(x: torch.Tensor, pad: int) -> torch.Tensor:
    """An empty N x T x (C + 2 pad) x H x W buffer in x's memory layout, its pad channels zeroed."""
    n, t, c, h, w = x.shape
    if x.dim() == 5 and x.stride(2) == 1 and c > 1:  # channels-last: channels innermost
        buf = x.new_empty(n, h, w, t, c + 2 * pad).permute(0, 3, 4, 1, 2)
    else:
        buf = x.new_empty(n, t, c + 2 * pad, h, w)
    buf[:, :, :pad].zero_()
    buf[:, :, c + pad:].zero_()
    return buf


class LRNFunction(torch.autograd.Function):
    """LRN over dim 2 of an N x towers x C x H x W view: each tower normalises only its own C maps."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
        if size % 2 == 0:
            raise ValueError(f"the fast LRN needs an odd window size (the paper's is 5), got {size}: use impl='native'.")
        pad = size // 2
        sq = _padded_like(x, pad)
        # alpha/n folded into the squares: one pass over the maps instead of two.
        torch.addcmul(x.new_zeros(()), x, x, value=alpha / size, out=sq[:, :, pad:pad + x.shape[2]])
        d = _window_sum(sq, size).add_(k)
        del sq
        p = d.pow(-beta)
        y = x * p
        ctx.save_for_backward(x, y, d, p)
        ctx.size, ctx.scale = size, 2.0 * beta * alpha / size
        return y

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        x, y, d, p = ctx.saved_tensors
        pad = ctx.size // 2
        t = _padded_like(x, pad)
        inner = t[:, :, pad:pad + x.shape[2]]
        torch.mul(grad_y, y, out=inner)
        inner.div_(d)
        window = _window_sum(t, ctx.size)
        del t, inner
        grad_x = torch.addcmul(grad_y * p, x, window, value=-ctx.scale)
        return grad_x, None, None, None, None


def _native_per_tower(x5: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    n, t, c, h, w = x5.shape
    return F.local_response_norm(x5.reshape(n * t, c, h, w), size, alpha, beta, k).reshape(n, t, c, h, w)


_compiled = None


def _compiled_per_tower(x5, size, alpha, beta, k):
    """torch.compile of the native composite, built on first use only (needs a working compiler)."""
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(_native_per_tower, dynamic=False)
    return _compiled(x5, size, alpha, beta, k)


def local_response_norm(x: torch.Tensor, towers: int, size: int, alpha: float, beta: float, k: float,
                        impl: str = "fast") -> torch.Tensor:
    """LRN over channels of each tower separately: x is N x (towers*C) x H x W, tower t owns channels [tC, (t+1)C).

    impl: "fast" (LRNFunction, the default), "native" (torch's composite) or "compiled" (torch.compile of
    the composite, for benchmarks). All three give the same numbers to rounding.
    """
    n, c, h, w = x.shape
    if c % towers:
        raise ValueError(f"LRN over {c} channels cannot be split into {towers} towers: the channel count must divide.")
    # Tower channel blocks are contiguous: the view N x T x C/T x H x W keeps the towers apart in any layout.
    x5 = x.unflatten(1, (towers, c // towers))
    if impl == "fast":
        y5 = LRNFunction.apply(x5, size, alpha, beta, k)
    elif impl == "native":
        y5 = _native_per_tower(x5, size, alpha, beta, k)
    elif impl == "compiled":
        y5 = _compiled_per_tower(x5, size, alpha, beta, k)
    else:
        raise ValueError(f"unknown LRN implementation {impl!r}: choose one of {', '.join(LRN_IMPLS)}.")
    return y5.flatten(1, 2)


def lrn_reference(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """The formula written out channel by channel (slow; for tests)."""
    channels = x.shape[1]
    out = torch.empty_like(x)
    for i in range(channels):
        lo, hi = max(0, i - size // 2), min(channels, i + size // 2 + 1)
        s = (x[:, lo:hi] ** 2).sum(dim=1)
        out[:, i] = x[:, i] / (k + alpha / size * s) ** beta
    return out
