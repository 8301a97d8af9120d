"""python -m alexnet2gpu.info: the network's layers, shapes, parameters and multiply-adds per tower
(alexnet2gpu/model/info.py)."""
import sys

from alexnet2gpu.model.info import main

if __name__ == "__main__":
    sys.exit(main())
