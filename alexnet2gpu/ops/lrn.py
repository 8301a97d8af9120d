"""Local response normalisation per tower (paper §3.3, docs/paper.md §2).

b_i = a_i / (k + alpha/n * sum_{j=i-n/2}^{i+n/2} a_j^2)^beta, the window clipped at each tower's edges.
alpha is divided by n as in the original code (cuda-convnet2 layer.py `scale /= size`) and as
torch.nn.LocalResponseNorm does, so the paper's printed constants give the network that produced its results.

Why a hand-written autograd function: `F.local_response_norm` is a composite of ~8 operations (pad,
avg_pool3d, pow, div...) that autograd differentiates one by one, a large share of a CPU training step of
the merged net (docs/benchmarks.md). `LRNFunction` applies the closed-form backward

    d_j = k + alpha/n * sum_{i in win(j)} a_i^2,    b_j = a_j d_j^-beta,
    dL/da_i = g_i d_i^-beta - 2 beta alpha/n * a_i * sum_{j in win(i)} g_j b_j / d_j

(the window is symmetric, so the backward's sum is the same window sum), saving only a, b, d and d^-beta.
Every step is elementwise, so what costs is memory traffic, not arithmetic (docs/benchmarks.md): the maps
are processed in chunks of rows small enough to stay in the CPU's cache (`chunk_elements`), each chunk going
through the whole chain (square, window sum, power, product) before the next is read. The window sum runs
over a flat buffer in which every tower's row of channels sits between n//2 pad slots on each side, so all
its shifted adds are long contiguous runs in either memory layout. `lrn_reference` is the formula written
out channel by channel, kept for the tests.

On CUDA the default is another implementation: ReLU and LRN fused in Triton kernels (lrn_op.py), which read
the conv output once and write the normalised maps once; the chunks above are a CPU cache trick.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .kernels.sizes import WINDOW
from .lrn_op import TRITON_AVAILABLE, fused_relu_lrn
from .maps import plus_bias

LRN_IMPLS = ("auto", "chunked", "triton", "formula")
CHUNK_ELEMENTS_PER_THREAD = 1 << 19  # 2 MB of fp32 per buffer and thread: measured best on a 1 MB-L2 core


def chunk_elements() -> int:
    """Elements of one chunk's padded buffer: scaled with the threads that share each elementwise op."""
    return CHUNK_ELEMENTS_PER_THREAD * max(1, torch.get_num_threads())


def _as_rows(x5: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """An N x T x C x H x W tensor as an A x C x B view: rows of one tower's C channels, B = H*W apart
    (contiguous maps: A = N*T) or adjacent (channels-last maps: A = N*H*W*T, B = 1). Copies only when x5
    is in neither layout."""
    n, t, c, h, w = x5.shape
    if channels_last:
        return x5.permute(0, 3, 4, 1, 2).contiguous().view(n * h * w * t, c, 1)
    return x5.contiguous().view(n * t, c, h * w)


def _from_rows(rows: torch.Tensor, like5: torch.Tensor) -> torch.Tensor:
    """Inverse of `_as_rows`: the N x T x C x H x W view of `rows` in the layout `like5` was read in."""
    n, t, c, h, w = like5.shape
    if rows.shape[2] == 1 and (h, w) != (1, 1):
        return rows.view(n, h, w, t, c).permute(0, 3, 4, 1, 2)
    return rows.view(n, t, c, h, w)


def _is_channels_last(x5: torch.Tensor) -> bool:
    return x5.permute(0, 3, 4, 1, 2).is_contiguous() and not x5.is_contiguous()


class _Windows:
    """Scratch buffers for window sums over `rows` rows of an A x C x B tensor, reused chunk after chunk.

    `padded` is flat: row r's channel i sits at (r*(C+2p) + p + i)*B, with p = size//2 pad slots before and
    after each row, and B*2p trailing slots so every window of the last row is in range. The window sum of
    a slot is then the sum of `size` slots B apart, for every row at once: long contiguous adds.
    """

    def __init__(self, like: torch.Tensor, rows: int, size: int, pad_value: float):
        _, c, b = like.shape
        self.c, self.b, self.size, self.pad = c, b, size, size // 2
        self.width = (c + 2 * self.pad) * b
        self.padded = like.new_full((rows * self.width + 2 * self.pad * b,), pad_value)
        self.pad_value = pad_value
        if size == 5:
            self.pairs = like.new_empty(rows * self.width + 3 * b)
            self.fours = like.new_empty(rows * self.width + b)

    def interior(self, rows: int) -> torch.Tensor:
        """The rows x C x B view of the channel slots of the first `rows` rows (to write the summands into)."""
        return self.padded[:rows * self.width].view(rows, -1, self.b)[:, self.pad:self.pad + self.c]

    def sum_into(self, rows: int, out: torch.Tensor) -> torch.Tensor:
        """Window sums of the first `rows` rows into `out` (rows x C x B)."""
        n, b, buf = rows * self.width, self.b, self.padded
        if rows * self.width < buf.numel() - 2 * self.pad * b:  # a short last chunk: reset its trailing pads
            buf[n:n + 2 * self.pad * b].fill_(self.pad_value)
        if self.size == 5:  # windows of 2, then 4, then 5: three passes
            pairs = torch.add(buf[:n + 3 * b], buf[b:n + 4 * b], out=self.pairs[:n + 3 * b])
            fours = torch.add(pairs[:n + b], pairs[2 * b:n + 3 * b], out=self.fours[:n + b])
            return torch.add(self._rows(fours, rows, 0), self._rows(buf, rows, 4 * b), out=out)
        out.copy_(self._rows(buf, rows, 0))
        for shift in range(1, self.size):
            out += self._rows(buf, rows, shift * b)
        return out

    def _rows(self, flat: torch.Tensor, rows: int, offset: int) -> torch.Tensor:
        return flat[offset:offset + rows * self.width].view(rows, -1, self.b)[:, :self.c]


def _neg_pow(d: torch.Tensor, beta: float, out: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """d^-beta into `out`; for the paper's beta = 3/4 as rsqrt(d) * sqrt(rsqrt(d)), 2x cheaper than pow."""
    if beta == 0.75:
        torch.rsqrt(d, out=out)
        return out.mul_(torch.sqrt(out, out=scratch))
    return torch.pow(d, -beta, out=out)


class LRNFunction(torch.autograd.Function):
    """LRN over dim 2 of an N x towers x C x H x W view: each tower normalises only its own C maps."""

    @staticmethod
    def forward(ctx, x5: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
        if size % 2 == 0:
            raise ValueError(f"the chunked LRN needs an odd window size (the paper's is 5), got {size}: use impl='formula'.")
        channels_last = _is_channels_last(x5)
        x = _as_rows(x5, channels_last)
        step = max(1, min(x.shape[0], chunk_elements() // ((x.shape[1] + size - 1) * x.shape[2])))
        # k/size in every slot, pads included: each window then sums to k + alpha/n * sum a^2 (one pass less).
        win = _Windows(x, step, size, k / size)
        bias = x.new_full((), k / size)
        y, d, p = torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)
        scratch = x.new_empty((step,) + x.shape[1:])
        for r0 in range(0, x.shape[0], step):
            rows = slice(r0, r0 + step)
            xs, ds, ps = x[rows], d[rows], p[rows]
            n = xs.shape[0]
            torch.addcmul(bias, xs, xs, value=alpha / size, out=win.interior(n))
            win.sum_into(n, ds)
            _neg_pow(ds, beta, ps, scratch[:n])
            torch.mul(xs, ps, out=y[rows])
        ctx.save_for_backward(x, y, d, p)
        ctx.size, ctx.scale, ctx.step, ctx.channels_last = size, 2.0 * beta * alpha / size, step, channels_last
        return _from_rows(y, x5)

    @staticmethod
    def backward(ctx, grad_y5: torch.Tensor):
        x, y, d, p = ctx.saved_tensors
        g = _as_rows(grad_y5, ctx.channels_last)
        win = _Windows(x, ctx.step, ctx.size, 0.0)
        grad_x = torch.empty_like(x)
        window = x.new_empty((ctx.step,) + x.shape[1:])
        for r0 in range(0, x.shape[0], ctx.step):
            rows = slice(r0, r0 + ctx.step)
            gs, out = g[rows], grad_x[rows]
            n = gs.shape[0]
            inner = win.interior(n)
            torch.mul(gs, y[rows], out=inner)
            inner.div_(d[rows])
            ws = win.sum_into(n, window[:n])
            torch.mul(gs, p[rows], out=out)
            out.addcmul_(x[rows], ws, value=-ctx.scale)
        return _from_rows(grad_x, grad_y5), None, None, None, None


def _formula_per_tower(x5: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """The formula in plain tensor operations: the window sum as `size` shifted slices of the squares padded by
    size//2 zero channels on each side of every tower: slow in eager mode, and torch.compile's fusion of it and
    its backward was slower still than the Triton op on an H100 (docs/benchmarks.md). Plain ops any exporter
    or compiler can read."""
    pad = size // 2
    channels = x5.shape[2]
    padded = F.pad(x5 * x5, (0, 0, 0, 0, pad, pad))  # N x T x (C + 2 pad) x H x W
    window = sum(padded[:, :, i:i + channels] for i in range(size))
    return x5 * (k + alpha / size * window).pow(-beta)


def resolve_impl(impl: str, device: torch.device, size: int, after_relu: bool) -> str:
    """"auto" is the device's fastest: on CUDA with the paper's window, the Triton kernels, which fuse the
    ReLU before the LRN (`after_relu`: the caller applies both); elsewhere the chunked LRNFunction."""
    if impl not in LRN_IMPLS:
        raise ValueError(f"unknown LRN implementation {impl!r}: choose one of {', '.join(LRN_IMPLS)}.")
    if impl in ("auto", "triton"):
        usable = after_relu and size == WINDOW and TRITON_AVAILABLE
        if impl == "auto":
            return "triton" if usable and device.type == "cuda" else "chunked"
        if not usable:
            raise ValueError(f"the Triton LRN computes relu then LRN with the paper's window of {WINDOW} and needs "
                             f"Triton (size {size} here): call relu_local_response_norm, or use impl='chunked'.")
    return impl


def local_response_norm(x: torch.Tensor, towers: int, size: int, alpha: float, beta: float, k: float,
                        impl: str = "auto") -> torch.Tensor:
    """LRN over channels of each tower separately: x is N x (towers*C) x H x W, tower t owns channels [tC, (t+1)C).

    impl: "auto" or "chunked" (LRNFunction), or "formula" (the formula as sums of shifted slices, in plain
    ops). Both give the same numbers to rounding.
    """
    n, c, h, w = x.shape
    _check_towers(c, towers)
    impl = resolve_impl(impl, x.device, size, after_relu=False)
    # Tower channel blocks are contiguous: the view N x T x C/T x H x W keeps the towers apart in any layout.
    x5 = x.unflatten(1, (towers, c // towers))
    if impl == "chunked":
        y5 = LRNFunction.apply(x5, size, alpha, beta, k)
    else:
        y5 = _formula_per_tower(x5, size, alpha, beta, k)
    return y5.flatten(1, 2)


def relu_local_response_norm(z: torch.Tensor, towers: int, size: int, alpha: float, beta: float, k: float,
                             impl: str = "auto", bias: torch.Tensor | None = None) -> torch.Tensor:
    """relu(z + bias) then `local_response_norm`: with impl "triton" (CUDA's "auto") one fused op (lrn_op.py),
    whose kernels add the optional `bias` (the convolution's, which then ran without it) as they read z; else an
    in-place ReLU (a convolution's backward does not need its output, so the ReLU may overwrite it) and the LRN."""
    _check_towers(z.shape[1], towers)
    if resolve_impl(impl, z.device, size, after_relu=True) == "triton":
        return fused_relu_lrn(z, towers, alpha, beta, k, bias)
    return local_response_norm(F.relu(plus_bias(z, bias), inplace=True), towers, size, alpha, beta, k, impl)


def runs_triton(impl: str, device: torch.device) -> bool:
    """Whether relu_local_response_norm(..., impl) on `device` runs the fused Triton kernels, which also add a
    convolution's bias as they read the maps (so the convolution before them may run without one)."""
    return resolve_impl(impl, device, WINDOW, after_relu=True) == "triton"


def _check_towers(channels: int, towers: int) -> None:
    if channels % towers:
        raise ValueError(f"LRN over {channels} channels cannot be split into {towers} towers: the channel count "
                         "must divide.")


def lrn_reference(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """The formula written out channel by channel (slow; for tests)."""
    channels = x.shape[1]
    out = torch.empty_like(x)
    for i in range(channels):
        lo, hi = max(0, i - size // 2), min(channels, i + size // 2 + 1)
        s = (x[:, lo:hi] ** 2).sum(dim=1)
        out[:, i] = x[:, i] / (k + alpha / size * s) ** beta
    return out
