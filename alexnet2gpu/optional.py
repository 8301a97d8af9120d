"""Optional dependencies: imported on first use, and named with the extra that installs them when absent."""
from __future__ import annotations

import importlib

from .errors import TrainError

# module -> the setup.cfg extra that installs it
EXTRAS = {
    "safetensors": "export",
    "onnx": "export",
    "onnxruntime": "export",
    "onnxscript": "export",
    "tensorboard": "tensorboard",
}


def require(module: str, purpose: str):
    """Import `module`, or raise one sentence naming what needs it and the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        name = module.split(".")[0]  # a submodule (safetensors.torch) comes with its package
        raise TrainError(f"{purpose} needs the {name} package, which is not installed: "
                         f"pip install 'alexnet2gpu[{EXTRAS[name]}]'.") from None
