"""Throughput of every way to run AlexNet: `python bench.py --help` (the command line is alexnet2gpu/cli/bench.py)."""
import sys

from alexnet2gpu.cli.bench import main

if __name__ == "__main__":
    sys.exit(main())
