"""The GPU tools (tools/*.py) on a machine without CUDA: each imports what it uses from the package and stops
with one sentence. GPU time is scarce; an import broken by a move must show up here, not on the GPU box."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path of the tools")
@pytest.mark.parametrize("tool", ["profile_step.py", "lrn_microbench.py"])
def test_gpu_tools_import_and_say_they_need_cuda(tool):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(ROOT / "tools" / tool)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == f"{tool}: needs a CUDA device"


def test_the_gpu_check_script_parses():
    assert subprocess.run(["bash", "-n", str(ROOT / "tools" / "gpu_check.sh")]).returncode == 0
