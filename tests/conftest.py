"""Shared test set-up: this checkout's package first, a fixed RNG state for every test, and Triton kernels
interpreted on CPU tensors where there is no GPU (so the CPU suite checks them too)."""
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when a kernel is defined: before any is imported

# Import this checkout's package, whatever the working directory (an installed copy must not win).
ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path[:1]:
    sys.path.insert(0, ROOT)


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` need a CUDA device: skipped, saying so, where there is none."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)


@pytest.fixture
def exact_fp32():
    """fp32 convolutions and matrix products without TF32, for the length of one test."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same global RNG state, so weights and inputs are reproducible."""
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory):
    """Folders for one test file's shared files (`module_tmp("name")`), removed after its last test: a full-size
    checkpoint is about 0.5 GB, and pytest keeps its own folders until the whole run ends."""
    made = []

    def mktemp(name: str):
        made.append(tmp_path_factory.mktemp(name))
        return made[-1]

    yield mktemp
    for path in made:
        shutil.rmtree(path, ignore_errors=True)
