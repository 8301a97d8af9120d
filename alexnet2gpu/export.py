"""python -m alexnet2gpu.export: trained weights as .safetensors, .onnx or .pt2, checked after writing
(alexnet2gpu/weights/export.py)."""
import sys

from alexnet2gpu.weights.export import main

if __name__ == "__main__":
    sys.exit(main())
