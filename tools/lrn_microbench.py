"""Time the Triton ReLU + LRN kernels alone on AlexNet's two LRN layers (batch 256, both towers), for each
kernel form, tile and warp count: the numbers that choose lrn_kernels' defaults. Needs a CUDA device.

    PYTHONPATH=. python3 tools/lrn_microbench.py [--dtype bf16] [--layout channels-last]
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
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("lrn_microbench.py: needs a CUDA device", file=sys.stderr)
        return 2
    from triton.testing import do_bench

    from alexnet2gpu import lrn_kernels as K_

    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    fmt = torch.channels_last if args.layout == "channels-last" else torch.contiguous_format
    forms = K_.FORMS if args.layout == "channels-last" else ("tile", "tile-recompute")
    print(f"{'layer':5} {'pass':8} {'form':15} {'tile':>5} {'warps':>5} {'us':>8} {'GB/s':>7}")
    for name, shape in LAYERS.items():
        z = torch.randn(shape, device="cuda", dtype=dtype).contiguous(memory_format=fmt)
        g = torch.randn_like(z)
        nbytes = z.numel() * z.element_size()
        y = K_.relu_lrn_forward(z, 2, ALPHA, BETA, K)
        want = K_.relu_lrn_backward(g, z, y, 2, ALPHA, BETA, K, form="tile-recompute")
        for form in forms:
            for tile in (512, 1024, 2048):
                for warps in (4, 8):
                    if form != "tile-recompute":
                        ms = do_bench(lambda: K_.relu_lrn_forward(z, 2, ALPHA, BETA, K, form=form, tile=tile,
                                                                  num_warps=warps))
                        print(f"{name:5} {'forward':8} {form:15} {tile:5} {warps:5} {ms * 1e3:8.1f} "
                              f"{2 * nbytes / ms / 1e6:7.0f}")
                    got = K_.relu_lrn_backward(g, z, y, 2, ALPHA, BETA, K, form=form, tile=tile, num_warps=warps)
                    err = ((got.float() - want.float()).norm() / want.float().norm()).item()
                    ms = do_bench(lambda: K_.relu_lrn_backward(g, z, y, 2, ALPHA, BETA, K, form=form, tile=tile,
                                                               num_warps=warps))
                    print(f"{name:5} {'backward':8} {form:15} {tile:5} {warps:5} {ms * 1e3:8.1f} "
                          f"{3 * nbytes / ms / 1e6:7.0f}  rel.err vs recompute {err:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
