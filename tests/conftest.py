"""Shared test set-up: this checkout's package first, and a fixed RNG state for every test."""
import sys
from pathlib import Path

import pytest
import torch

# Import this checkout's package, whatever the working directory (an installed copy must not win).
ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path[:1]:
    sys.path.insert(0, ROOT)


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same global RNG state, so weights and inputs are reproducible."""
    torch.manual_seed(0)
