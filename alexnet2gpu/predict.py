"""python -m alexnet2gpu.predict: classify images with trained weights, one line per image
(alexnet2gpu/weights/predict.py)."""
import sys

from alexnet2gpu.weights.predict import main

if __name__ == "__main__":
    sys.exit(main())
