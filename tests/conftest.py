import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same global RNG state, so weights and inputs are reproducible."""
    torch.manual_seed(0)
