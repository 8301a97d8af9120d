"""Resuming: what a resume takes from the checkpoint and what from the command line, where it writes, and
the commands train.py's messages advise, each run as printed."""
import shlex

import pytest

from alexnet2gpu.weights.checkpoint import load_checkpoint
from tests.helpers.runs import TINY, read_metrics, run_main


def advised(text: str, after: str) -> list[str]:
    """The arguments of the `python train.py ...` command a message gives after `after`."""
    line = next(l for l in text.splitlines() if after in l)
    words = shlex.split(line.split(after, 1)[1].strip().rstrip("."))
    assert words[:2] == ["python", "train.py"], line
    return words[2:]


@pytest.mark.slow
def test_max_steps_limits_one_invocation_and_a_resume_without_it_trains_on(tmp_path, tiny, capsys):
    """--max-steps is this invocation's limit (2 steps an epoch here): a resume without it trains to --epochs,
    one with it takes that many more steps, and a finished run says there is nothing to train."""
    run = tmp_path / "runs" / "r"
    code, out, err = run_main(["--data", tiny, "--out", tmp_path / "runs", "--run-name", "r", "--epochs", "2",
                               "--max-steps", "1"] + TINY, capsys)
    assert code == 0, err
    assert "stopped by --max-steps 1 at step 1, after epoch 1 of 2" in out and "done:" not in out
    code, out, err = run_main(advised(out, "continue with:"), capsys)  # the advised command, as printed
    assert code == 0, err
    assert [r["steps"] for r in read_metrics(run)] == ["1", "3"] and "done: best val top-1 error" in out
    code, out, err = run_main(["--resume", run, "--epochs", "4", "--max-steps", "1"], capsys)
    assert code == 0, err
    assert [r["steps"] for r in read_metrics(run)] == ["1", "3", "4"] and "stopped by --max-steps 1 at step 4" in out
    assert load_checkpoint(run)["step"] == 4
    code, out, err = run_main(["--resume", run, "--epochs", "3"], capsys)
    assert code == 0 and f"nothing to train: {run} has done 3 epoch(s) and --epochs is 3" in out, out + err
    assert len(read_metrics(run)) == 3
