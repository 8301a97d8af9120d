"""What several test files share: the parity criteria (parity.py), child processes' environment (child_env.py),
small torchrun-like worlds (worlds.py), a checkpoint written as train.py writes one (weights.py), and the scripts
tests run under torchrun (torchrun_worker.py, train_with_a_fault.py)."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
