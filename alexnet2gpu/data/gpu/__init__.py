"""The GPU data path (`--decode gpu`): JPEG batches decoded and cropped on the training GPU (decode.py), by two
threads that work ahead of the training loop (loader.py)."""
