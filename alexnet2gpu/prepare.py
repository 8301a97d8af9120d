"""python -m alexnet2gpu.prepare: the one-time preparation of a data set: every image as a 256x256 JPEG
(alexnet2gpu/data/prepare/prepare.py)."""
import sys

from alexnet2gpu.data.prepare.prepare import main

if __name__ == "__main__":
    sys.exit(main())
