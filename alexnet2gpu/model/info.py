"""Summary of the network: one row per layer and tower with output shape, parameters, multiply-adds, device.

    python -m alexnet2gpu.info                          # the paper's network, two-device layout view
    python -m alexnet2gpu.info --layout merged          # one device, grouped convolutions
    python -m alexnet2gpu.info --num-classes 10 --in-channels 1

Counts come from the layer table (docs/paper.md §1), not from a forward pass, so no CUDA is needed.
"""
from __future__ import annotations

import argparse
import math
import sys

from .layers import FC8, LAYERS, POOL5_SIZE, TOWERS, canonical_shapes, multiply_adds

# Spatial size of each conv layer's output at 224 (padded to 227) or 227 input, and after its pooling.
CONV_OUT = {"conv1": 55, "conv2": 27, "conv3": 13, "conv4": 13, "conv5": 13}
POOLED = {"conv1": 27, "conv2": 13, "conv5": POOL5_SIZE}


def layer_rows(layout: str, num_classes: int = 1000, in_channels: int = 3) -> list[dict]:
    """One dict per (layer, tower): name, tower, output shape, parameters, multiply-adds, device."""
    shapes = canonical_shapes(num_classes, in_channels)
    macs = multiply_adds(num_classes, in_channels)
    devices = ["cuda:0", "cuda:1"] if layout == "two-device" else ["cpu", "cpu"]
    towers = range(TOWERS) if layout == "two-device" else [None]
    rows = []
    for layer in [l.name for l in LAYERS] + [FC8]:
        params = math.prod(shapes[f"{layer}.weight"]) + math.prod(shapes[f"{layer}.bias"])
        width = shapes[f"{layer}.bias"][0]
        for tower in ([0] if layer == FC8 and towers != [None] else towers):
            share = 1 if (tower is None or layer == FC8) else TOWERS
            out = width // share
            size = POOLED.get(layer, CONV_OUT.get(layer))
            shape = (out, size, size) if size else (out,)
            rows.append(dict(layer=layer, tower="both" if tower is None else str(tower), out_shape=shape,
                             params=params // share, macs=macs[layer] // share,
                             device=devices[tower or 0]))
    return rows


def exchange_bytes_per_image(bytes_per_value: int = 4) -> dict[str, int]:
    """Bytes each tower receives from the other per image, forward (backward mirrors it); docs/paper.md §1."""
    per_tower = {"conv3": 13 * 13 * 128, "fc6": POOL5_SIZE * POOL5_SIZE * 128, "fc7": 2048, "fc8": 2048}
    # Before conv3, fc6, fc7 both towers receive; before fc8 only tower 0 does.
    return {k: v * bytes_per_value * (1 if k == FC8 else TOWERS) for k, v in per_tower.items()}


def format_summary(layout: str, num_classes: int, in_channels: int) -> str:
    rows = layer_rows(layout, num_classes, in_channels)
    lines = [f"AlexNet, {layout} layout, {in_channels} input channels, {num_classes} classes, 224x224 input",
             f"{'layer':6} {'tower':5} {'output*':>14} {'params':>12} {'mult-adds':>14}  device"]
    for r in rows:
        shape = "x".join(str(s) for s in r["out_shape"])
        lines.append(f"{r['layer']:6} {r['tower']:5} {shape:>14} {r['params']:>12,} {r['macs']:>14,}  {r['device']}")
    params = sum(r["params"] for r in rows)
    macs = sum(r["macs"] for r in rows)
    exchange = exchange_bytes_per_image()
    lines += [
        "* after the ReLU, LRN and pooling that follow the layer",
        f"total parameters: {params:,}",
        f"multiply-adds per image (forward): {macs / 1e6:.1f} M; a training step costs about 3x that",
        "cross-tower bytes per image, forward, both directions (fp32): "
        + ", ".join(f"{k} {v:,}" for k, v in exchange.items()) + f"; total {sum(exchange.values()):,}",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layout", choices=["merged", "two-device"], default="two-device")
    parser.add_argument("--num-classes", "--num_classes", type=int, default=1000)
    parser.add_argument("--in-channels", "--in_channels", type=int, default=3)
    args = parser.parse_args(argv)
    for flag, value, example in (("--num-classes", args.num_classes, 1000), ("--in-channels", args.in_channels, 3)):
        if value < 1:
            print(f"alexnet2gpu-info: error: {flag} must be a whole number of at least 1, got {value}: pass e.g. "
                  f"{flag} {example}.", file=sys.stderr)
            return 2
    print(format_summary(args.layout, args.num_classes, args.in_channels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
