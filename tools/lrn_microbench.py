"""Time the Triton ReLU + LRN kernels alone on AlexNet's two LRN layers (batch 256, both towers), for each
kernel form at a few tiles and warp counts: the numbers that choose lrn_kernels' defaults; then, per layer, the
bias in the kernels against passes of its own, and the backward of ReLU + LRN + max-pool as one kernel
(ops/kernels/lrn_pool.py) against the pool's and the LRN's kernels in turn.
Needs a CUDA device.

    PYTHONPATH=. python3 tools/lrn_microbench.py [--dtype bf16] [--layout channels-last] [--quick]

A form or tile that fails to compile or run prints one "failed" line and the others go on.
"""
from __future__ import annotations

import sys

import torch
from microbench_args import parse  # a sibling in tools/

LAYERS = {"lrn1": (256, 96, 55, 55), "lrn2": (256, 256, 27, 27)}  # conv1 and conv2 outputs, batch 256
ALPHA, BETA, K = 1e-4, 0.75, 2.0
# (elements a program, warps) timed for each pass and form; the first is the form's --quick point. The tile
# form was best at 512 x 4 warps backward, the forward at 1024 (docs/benchmarks.md). The gather form holds
# a whole tile of each tensor in registers: past about 2048 elements at 4 warps its backward spills (ptxas
# for sm_90). Few points: the run should take about a
# minute on an H100, compiles included.
POINTS = {
    "forward": {"tile": ((1024, 4), (512, 4)), "gather": ((1024, 4), (2048, 4))},
    "backward": {"tile": ((512, 4), (1024, 4)),
                 "gather": ((1024, 4), (512, 4), (2048, 8))},
}


def main(argv=None) -> int:
    parsed = parse("lrn_microbench.py", __doc__, "only the defaults and each form at its first point", argv)
    if parsed is None:
        return 2
    args, dtype, fmt = parsed
    from triton.testing import do_bench

    from alexnet2gpu.ops.kernels import lrn as kernels
    from alexnet2gpu.ops.kernels.lrn_window import tile_shape as window_tile_shape

    channels_last = args.layout == "channels-last"  # the gather form takes channels-last maps only
    forms = {"forward": kernels.FORMS if channels_last else ("tile",),
             "backward": kernels.FORMS if channels_last else ("tile",)}
    print(f"{'layer':5} {'pass':8} {'form':6} {'tile':>5} {'warps':>5} {'us':>8} {'GB/s':>7}")
    for name, layer_shape in LAYERS.items():
        z = torch.randn(layer_shape, device="cuda", dtype=dtype).contiguous(memory_format=fmt)
        g = torch.randn_like(z)
        nbytes = z.numel() * z.element_size()
        y = kernels.relu_lrn_forward(z, 2, ALPHA, BETA, K)
        default = kernels.relu_lrn_backward(g, z, y, 2, ALPHA, BETA, K)[0]
        print(f"{name:5} default form: {kernels.default_form(z)}")
        runs = {"forward": (lambda form, tile, warps: kernels.relu_lrn_forward(
                    z, 2, ALPHA, BETA, K, tile=tile, num_warps=warps, form=form), y, 2 * nbytes),
                "backward": (lambda form, tile, warps: kernels.relu_lrn_backward(
                    g, z, y, 2, ALPHA, BETA, K, form=form, tile=tile, num_warps=warps)[0], default, 4 * nbytes)}
        for pass_, (run, want, traffic) in runs.items():
            for form in forms[pass_]:
                for tile, warps in POINTS[pass_][form][:1 if args.quick else None]:
                    row = f"{name:5} {pass_:8} {form:6} {tile:5} {warps:5}"
                    try:
                        got = run(form, tile, warps)
                        err = ((got.float() - want.float()).norm() / want.float().norm()).item()
                        ms = do_bench(lambda: run(form, tile, warps))
                    except Exception as e:  # noqa: BLE001 - one line, then the next form
                        print(f"{row} failed: {_last_line(e)}", flush=True)
                        if type(e).__name__ == "OutOfResources":
                            continue  # this tile is too large; a smaller one may fit
                        break  # a compile error holds at every tile
                    pixels_x_channels = ""  # of the gather form's tile
                    if form in kernels.WINDOW_FORMS:
                        pixels_x_channels = "  tile %d x %d" % window_tile_shape(form, layer_shape[1] // 2, tile)
                    print(f"{row} {ms * 1e3:8.1f} {traffic / ms / 1e6:7.0f}  rel.diff vs default {err:.1e}"
                          f"{pixels_x_channels}", flush=True)
        print(bias_line(name, kernels, z, g, y, do_bench), flush=True)
        if channels_last:  # the fused kernels take channels-last maps
            print(pool_line(name, kernels, z, do_bench, args.quick), flush=True)
    return 0


FUSED_POINTS = ((1024, 4), (512, 4), (2048, 8))  # (elements a program, warps); the first is the default


def pool_line(name: str, kernels, z: torch.Tensor, do_bench, quick: bool) -> str:
    """The backward of ReLU + LRN + max-pool with the conv's bias: the max-pool's kernel then the LRN's (apart)
    against the one fused kernel at a few tiles, and the fused dz's relative difference from the pair's."""
    from alexnet2gpu.ops.kernels import lrn_pool as lrn_pool_kernels, pool as pool_kernels
    bias = torch.randn(z.shape[1], device=z.device)
    y = kernels.relu_lrn_forward(z, 2, ALPHA, BETA, K, bias=bias)
    _, argmax = pool_kernels.max_pool_forward(y)
    grad = torch.randn(argmax.shape, device=z.device, dtype=z.dtype).contiguous(memory_format=torch.channels_last)

    def apart():
        return kernels.relu_lrn_backward(pool_kernels.max_pool_backward(grad, y, argmax), z, y, 2, ALPHA, BETA, K,
                                         bias=bias)[0]

    def fused(tile, warps):
        return lrn_pool_kernels.relu_lrn_pool_backward(grad, z, argmax, 2, ALPHA / 5, BETA, K, bias=bias, tile=tile,
                                                       num_warps=warps)[0]

    want = apart().float()
    parts = [f"{name:5} +pool backward: apart {do_bench(apart) * 1e3:.1f} us; fused"]
    for tile, warps in FUSED_POINTS[:1 if quick else None]:
        try:
            err = ((fused(tile, warps).float() - want).norm() / want.norm()).item()
            parts.append(f" {do_bench(lambda: fused(tile, warps)) * 1e3:.1f} us at {tile} x {warps} warps "
                         f"(rel.diff {err:.1e});")
        except Exception as e:  # noqa: BLE001 - one note, then the next point
            parts.append(f" {tile} x {warps} failed: {_last_line(e)};")
    return "".join(parts)


def bias_line(name: str, kernels, z: torch.Tensor, g: torch.Tensor, y: torch.Tensor, do_bench) -> str:
    """The convolution's bias added in the kernels (the model's CUDA default) against in passes of its own (an
    add before the forward, a sum of dz after the backward), both at the default form and tile."""
    from alexnet2gpu.ops.maps import plus_bias
    bias = torch.randn(z.shape[1], device=z.device)
    times = [do_bench(run) * 1e3 for run in (
        lambda: kernels.relu_lrn_forward(plus_bias(z, bias), 2, ALPHA, BETA, K),
        lambda: kernels.relu_lrn_forward(z, 2, ALPHA, BETA, K, bias=bias),
        lambda: kernels.relu_lrn_backward(g, z, y, 2, ALPHA, BETA, K)[0].sum((0, 2, 3), dtype=torch.float32),
        lambda: kernels.relu_lrn_backward(g, z, y, 2, ALPHA, BETA, K, bias=bias))]
    return (f"{name:5} bias: forward {times[0]:.1f} us with an add before, {times[1]:.1f} us in the kernel; "
            f"backward {times[2]:.1f} us with a sum after, {times[3]:.1f} us in the kernel")


def _last_line(e: Exception) -> str:
    """The error itself: a Triton compile error's message ends with it, after the source excerpt."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[-1] if lines else ''}"[:200]


if __name__ == "__main__":
    sys.exit(main())
