"""Export trained weights: python -m alexnet2gpu.export WEIGHTS OUT, the format from OUT's suffix.

    python -m alexnet2gpu.export runs/RUN/checkpoints/best.pt alexnet.safetensors   # weights + metadata
    python -m alexnet2gpu.export runs/RUN/checkpoints/best.pt alexnet.onnx          # checked with ONNX Runtime
    python -m alexnet2gpu.export alexnet.safetensors alexnet.pt2                    # torch.export program

WEIGHTS: a train.py checkpoint, a run folder or a .safetensors file. The .onnx and .pt2 files hold the
merged network in inference mode (dropout off) with a dynamic batch: input N x C x crop x crop, on the 0..255
scale with the per-channel mean already subtracted (stored in the file's metadata with the class names),
output N x classes logits. Their LRN is the per-tower formula in plain tensor operations (lrn.py "formula"),
which both exporters turn into ordinary graph operations. After writing, the command runs the file (ONNX
Runtime, torch.export.load) and PyTorch on one random batch and prints the largest difference of their
logits relative to the largest logit; above --tolerance it fails. OUT's folder is made when missing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from alexnet2gpu.errors import TrainError
from alexnet2gpu.model.stack import StackOptions

from .hub import load_network
from .io import SAFETENSORS, Weights, load_weights, save_safetensors, written

FORMATS = (SAFETENSORS, ".onnx", ".pt2")
TOLERANCE = 1e-4  # float32 logits of two runtimes agree to ~1e-6 relative; 1e-4 leaves room, catches a wrong op
TRACE_BATCH, CHECK_BATCH = 2, 3  # the check runs another batch size than the one traced: the batch is dynamic
PT2_META = "alexnet2gpu.json"


def metadata(weights: Weights) -> dict[str, str]:
    """What using the exported network needs, as strings: class names, mean, crop, input shape."""
    return dict(classes=json.dumps(weights.classes), mean=json.dumps(weights.mean), crop=str(weights.crop),
                num_classes=str(weights.num_classes), in_channels=str(weights.in_channels),
                input="N x in_channels x crop x crop, 0..255 minus mean; output: N x num_classes logits")


EXPORT_OPTIONS = StackOptions(lrn="formula")  # the LRN as plain tensor operations, which both exporters read


def exportable(weights: Weights) -> torch.nn.Module:
    """The merged network holding `weights` in inference mode, built to be traced: its LRN as plain tensor
    operations and its weights plainly strided."""
    return load_network(weights, options=EXPORT_OPTIONS).eval().to(memory_format=torch.contiguous_format)


def random_input(weights: Weights, batch: int) -> torch.Tensor:
    """Mean-subtracted-looking input: uniform on 0..255, minus 128."""
    generator = torch.Generator().manual_seed(0)
    return torch.rand(batch, weights.in_channels, weights.crop, weights.crop, generator=generator) * 255 - 128


def relative_difference(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-12))


def export(source, out, tolerance: float = TOLERANCE, log=print) -> float | None:
    """Write `out` from the weights at `source`; returns the checked relative difference (None for weights)."""
    out = Path(out)
    if out.suffix not in FORMATS:
        raise TrainError(f"cannot tell the format of {out}: end the file name in {', '.join(FORMATS)}.")
    weights = load_weights(source)
    output_folder(out)
    if out.suffix == SAFETENSORS:
        save_safetensors(weights, out)
        log(f"wrote {out}: {len(weights.model)} tensors ({weights.num_classes} classes, {weights.in_channels} "
            "input channels) with class names, mean and crop as metadata")
        return None
    model = exportable(weights)
    with torch.no_grad():
        x = random_input(weights, TRACE_BATCH)
        batch = torch.export.Dim("batch", min=1, max=4096)
        check = random_input(weights, CHECK_BATCH)
        want = model(check)
        if out.suffix == ".onnx":
            got, runtime = _onnx(model, x, batch, out, weights, check), "ONNX Runtime"
        else:
            got, runtime = _pt2(model, x, batch, out, weights, check), "torch.export.load"
    diff = relative_difference(got, want)
    log(f"wrote {out}; {runtime} vs PyTorch logits on a random batch of {CHECK_BATCH}: largest difference "
        f"{diff:.2e} of the largest logit (tolerance {tolerance:g})")
    if not diff <= tolerance:
        raise TrainError(f"{out} computes logits {diff:.2e} (relative) away from PyTorch's, more than {tolerance:g}: "
                         "the exporter changed the network; do not use this file.")
    return diff


def output_folder(out: Path) -> None:
    """Make OUT's folder when it is missing, and refuse one that cannot be written before the (slow) export."""
    folder = out.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TrainError(f"cannot make the folder {folder} for {out.name} ({e.strerror or e}): pass a path in a "
                         "folder you can write to.") from None
    if not os.access(folder, os.W_OK):  # access(2) also says no on a read-only mount, where root cannot write either
        raise TrainError(f"cannot write {out}: the folder {folder} is read-only; pass a path in a folder you can "
                         "write to.")


def _onnx(model, x, batch, out: Path, weights: Weights, check: torch.Tensor) -> torch.Tensor:
    from alexnet2gpu.optional import require

    for module in ("onnx", "onnxscript"):
        require(module, "exporting to .onnx")
    ort = require("onnxruntime", "checking the .onnx file")
    onnx = require("onnx", "exporting to .onnx")
    program = torch.onnx.export(model, (x,), dynamo=True, dynamic_shapes=({0: batch},), input_names=["image"],
                                output_names=["logits"], verbose=False)
    proto = program.model_proto
    onnx.helper.set_model_props(proto, metadata(weights))
    with written(out) as tmp:
        onnx.save(proto, str(tmp))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"image": check.numpy()})[0])


def _pt2(model, x, batch, out: Path, weights: Weights, check: torch.Tensor) -> torch.Tensor:
    program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    with written(out) as tmp:
        torch.export.save(program, str(tmp), extra_files={PT2_META: json.dumps(metadata(weights))})
    return torch.export.load(str(out)).module()(check)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m alexnet2gpu.export", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 1)[1])
    p.add_argument("weights", help="a train.py checkpoint, a run folder or a .safetensors file")
    p.add_argument("out", help="the file to write: .safetensors, .onnx or .pt2")
    p.add_argument("--tolerance", type=float, default=TOLERANCE,
                   help=f"largest relative logit difference accepted (default {TOLERANCE:g})")
    args = p.parse_args(argv)
    try:
        export(args.weights, args.out, args.tolerance)
    except (TrainError, ValueError) as e:
        print(f"export: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
