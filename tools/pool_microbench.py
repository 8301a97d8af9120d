"""Time the Triton max-pool kernels (ops/kernels/pool.py) against ATen's on AlexNet's three pools (batch 256, both
towers), forward and backward, for a few tiles and warp counts: the numbers that choose pool_kernels' defaults.
Prints microseconds per call, the bandwidth that implies (bytes each kernel must move) and the largest
difference from ATen's result. Needs a CUDA device.

    PYTHONPATH=. python3 tools/pool_microbench.py [--dtype fp32] [--layout contiguous] [--quick]
"""
from __future__ import annotations

import sys

import torch
from microbench_args import parse  # a sibling in tools/

POOLS = {"pool1": (256, 96, 55, 55), "pool2": (256, 256, 27, 27), "pool5": (256, 256, 13, 13)}  # their inputs


def main(argv=None) -> int:
    parsed = parse("pool_microbench.py", __doc__, "only ATen and the default tile and warps", argv)
    if parsed is None:
        return 2
    args, dtype, fmt = parsed
    from triton.testing import do_bench

    from alexnet2gpu.ops.kernels import pool as kernels

    sweep = [(t, w) for t in (512, 1024, 2048) for w in (4, 8)]
    forward_configs = [(kernels.FORWARD_TILE, kernels.NUM_WARPS)] if args.quick else sweep
    backward_configs = [(kernels.BACKWARD_TILE, kernels.NUM_WARPS)] if args.quick else sweep
    print(f"{args.dtype}, {args.layout}; * marks pool_kernels' defaults; max|diff| is against ATen's result")
    print(f"{'pool':5} {'pass':8} {'kernel':7} {'tile':>5} {'warps':>5} {'us':>8} {'GB/s':>7} {'max|diff|':>9}")
    for name, shape in POOLS.items():
        x = torch.randn(shape, device="cuda", dtype=dtype).contiguous(memory_format=fmt)
        want, indices = torch.ops.aten.max_pool2d_with_indices.default(x, [3, 3], [2, 2])
        g = torch.randn_like(want)
        want_dx = torch.ops.aten.max_pool2d_with_indices_backward.default(g, x, [3, 3], [2, 2], [0, 0], [1, 1],
                                                                          False, indices)
        size = x.element_size()
        in_bytes, out_bytes = x.numel() * size, want.numel() * size
        # what each pass must move: ATen's int64 index against Triton's int8 window position
        aten_forward, aten_backward = in_bytes + out_bytes + 8 * want.numel(), out_bytes + 8 * want.numel() + in_bytes
        ours_forward, ours_backward = in_bytes + out_bytes + want.numel(), out_bytes + want.numel() + in_bytes

        def row(pass_, kernel, tile, warps, ms, nbytes, diff, default=False):
            print(f"{name:5} {pass_:8} {kernel + '*' * default:7} {tile:>5} {warps:>5} {ms * 1e3:8.1f} "
                  f"{nbytes / ms / 1e6:7.0f} {diff:9.1e}")

        row("forward", "aten", "", "", do_bench(
            lambda: torch.ops.aten.max_pool2d_with_indices.default(x, [3, 3], [2, 2])), aten_forward, 0.0)
        for tile, warps in forward_configs:
            y, _ = kernels.max_pool_forward(x, tile=tile, num_warps=warps)
            diff = (y.float() - want.float()).abs().max().item()
            row("forward", "triton", tile, warps, do_bench(
                lambda: kernels.max_pool_forward(x, tile=tile, num_warps=warps)), ours_forward, diff,
                (tile, warps) == (kernels.FORWARD_TILE, kernels.NUM_WARPS))
        row("backward", "aten", "", "", do_bench(
            lambda: torch.ops.aten.max_pool2d_with_indices_backward.default(
                g, x, [3, 3], [2, 2], [0, 0], [1, 1], False, indices)), aten_backward, 0.0)
        _, argmax = kernels.max_pool_forward(x)
        for tile, warps in backward_configs:
            dx = kernels.max_pool_backward(g, x, argmax, tile=tile, num_warps=warps)
            diff = (dx.float() - want_dx.float()).abs().max().item()
            row("backward", "triton", tile, warps, do_bench(
                lambda: kernels.max_pool_backward(g, x, argmax, tile=tile, num_warps=warps)), ours_backward, diff,
                (tile, warps) == (kernels.BACKWARD_TILE, kernels.NUM_WARPS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
