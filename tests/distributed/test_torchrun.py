"""The real launcher: torchrun starts the ranks, world.setup reads its environment, and after a rank dies
`--max-restarts=1` restarts the job, which then completes. Without per-attempt store keys (world.py,
_attempt_store) the restarted ranks often read the dead ranks' addresses and fail with "Connection refused"."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers.child_env import child_env
from tests.helpers.worlds import ROOT


@pytest.mark.slow
def test_torchrun_restarts_after_a_rank_dies():
    env = child_env(OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "--max-restarts=1", str(ROOT / "tests" / "helpers" / "torchrun_worker.py")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    # What the run guarantees: the first attempt never finishes, the restarted one does with the right maths.
    # Not which rank noticed the death first: under load torchrun's SIGTERM can reach the survivor before it
    # has said anything.
    assert "attempt 0:" not in done.stdout
    assert "attempt 1: world 2 = 1 tower pair(s)" in done.stdout
    assert "gathered [0.0, 1.0], grad [2.0]" in done.stdout  # both towers' cross layers read each map


def test_only_the_main_rank_says_anything(capsys):
    from alexnet2gpu.distributed.world import Context, Printer

    Context(rank=1, world_size=2).say("from rank 1")
    Context(rank=0, world_size=2).say("from rank 0")
    assert capsys.readouterr().out == "from rank 0\n"
    lines = []
    Printer(True, lines.append)("said")
    Printer(False, lines.append)("silent")
    assert lines == ["said"]
