"""The one-time preparation of a data set (python -m alexnet2gpu.prepare): every image re-encoded as a 256x256
JPEG (prepare.py), planned from the source folders and ILSVRC's validation labels (plan.py, val_labels.py), and
the measurement of its quality setting (measure.py)."""
