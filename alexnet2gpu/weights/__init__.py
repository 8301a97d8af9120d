"""Trained weights in and out: the checkpoint file (checkpoint.py), the one loader of checkpoints, run folders
and .safetensors files (io.py), the network with its weights in one call and their evaluation transform
(hub.py), and the export and predict commands (export.py, predict.py)."""
