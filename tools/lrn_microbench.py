"""Time the Triton ReLU + LRN kernels alone on AlexNet's two LRN layers (batch 256, both towers), for each
backward form, tile and warp count: the numbers that choose lrn_kernels' defaults. Needs a CUDA device.

    PYTHONPATH=. python3 tools/lrn_microbench.py [--dtype bf16] [--layout channels-last] [--quick]
"""
from __future__ import annotations

import argparse
import sys

import torch

LAYERS = {"lrn1": (256, 96, 55, 55), "lrn2": (256, 256, 27, 27)}  # conv1 and conv2 outputs, batch 256
ALPHA, BETA, K = 1e-4, 0.75, 2.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--layout", default="channels-last", choices=["channels-last", "contiguous"])
    p.add_argument("--quick", action="store_true", help="only the defaults and each form at the default tile")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("lrn_microbench.py: needs a CUDA device", file=sys.stderr)
        return 2
    from triton.testing import do_bench

    from alexnet2gpu import lrn_kernels as kernels

    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    fmt = torch.channels_last if args.layout == "channels-last" else torch.contiguous_format
    forms = kernels.BACKWARD_FORMS if args.layout == "channels-last" else ("tile",)
    tiles = (kernels.BACKWARD_TILE,) if args.quick else (512, 1024, 2048)
    warp_counts = (4,) if args.quick else (4, 8)
    print(f"{'layer':5} {'pass':8} {'form':6} {'tile':>5} {'warps':>5} {'us':>8} {'GB/s':>7}")
    for name, shape in LAYERS.items():
        z = torch.randn(shape, device="cuda", dtype=dtype).contiguous(memory_format=fmt)
        g = torch.randn_like(z)
        nbytes = z.numel() * z.element_size()
        y = kernels.relu_lrn_forward(z, 2, ALPHA, BETA, K)
        default = kernels.relu_lrn_backward(g, z, y, 2, ALPHA, BETA, K)
        print(f"{name:5} default backward form: {kernels.default_backward_form(z, 2)}")
        for tile in (kernels.FORWARD_TILE,) if args.quick else tiles:
            for warps in warp_counts:
                ms = do_bench(lambda: kernels.relu_lrn_forward(z, 2, ALPHA, BETA, K, tile=tile, num_warps=warps))
                print(f"{name:5} {'forward':8} {'tile':6} {tile:5} {warps:5} {ms * 1e3:8.1f} "
                      f"{2 * nbytes / ms / 1e6:7.0f}")
        for form in forms:
            for tile in tiles:
                for warps in warp_counts:
                    got = kernels.relu_lrn_backward(g, z, y, 2, ALPHA, BETA, K, form=form, tile=tile,
                                                    num_warps=warps)
                    err = ((got.float() - default.float()).norm() / default.float().norm()).item()
                    ms = do_bench(lambda: kernels.relu_lrn_backward(g, z, y, 2, ALPHA, BETA, K, form=form,
                                                                    tile=tile, num_warps=warps))
                    print(f"{name:5} {'backward':8} {form:6} {tile:5} {warps:5} {ms * 1e3:8.1f} "
                          f"{4 * nbytes / ms / 1e6:7.0f}  rel.diff vs default {err:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
