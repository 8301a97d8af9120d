"""Train AlexNet with the paper's recipe: `python train.py --help` (the command line is alexnet2gpu/cli/train.py)."""
import sys

from alexnet2gpu.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
