"""The command line every kernel microbenchmark in tools/ shares: dtype, memory layout, --quick, and the one
sentence without CUDA."""
from __future__ import annotations

import argparse
import sys

import torch


def parse(tool: str, doc: str, quick_help: str, argv=None):
    """(args, dtype, memory format), or None after saying `tool` needs a CUDA device."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--layout", default="channels-last", choices=["channels-last", "contiguous"])
    p.add_argument("--quick", action="store_true", help=quick_help)
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print(f"{tool}: needs a CUDA device", file=sys.stderr)
        return None
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    fmt = torch.channels_last if args.layout == "channels-last" else torch.contiguous_format
    return args, dtype, fmt
