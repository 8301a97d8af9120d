"""Resuming: what a resume takes from the checkpoint and what from the command line, where it writes, and
the commands train.py's messages advise, each run as printed."""
import json
import os
import shlex
import shutil
from pathlib import Path

import pytest

from alexnet2gpu.cli import train
from alexnet2gpu.weights.checkpoint import load_checkpoint
from tests.helpers.runs import TINY, read_metrics, run_main


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny):
    """A run folder after one epoch of one step, at lr 0.01 and batch 2 (tests take copies: `copy_run`)."""
    out = tmp_path_factory.mktemp("trained")
    code = train.main([str(a) for a in ["--data", tiny, "--out", out, "--run-name", "r", "--epochs", "1",
                                        "--max-steps", "1"] + TINY])
    assert code == 0
    return out / "r"


def copy_run(run: Path, dst: Path) -> Path:
    """A copy of a run folder made of hard links (a resume replaces files, never writes into them)."""
    shutil.copytree(run, dst, copy_function=os.link, ignore=shutil.ignore_patterns("run.lock"))
    return dst


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


def files_under(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_checkpoint_outside_a_run_folder_continues_in_a_new_one(trained, tmp_path, capsys):
    """A checkpoint copied to work/models/best.pt, or into a checkpoints/ folder beside another program's
    config.json, is not in a run folder: its surroundings are never written (work/'s own metrics.csv and
    config.json stay as they were); the run goes on in a new run folder under --out, and the banner says so."""
    work = tmp_path / "work"
    (work / "models").mkdir(parents=True)
    os.link(trained / "checkpoints" / "best.pt", work / "models" / "best.pt")
    (work / "metrics.csv").write_text("the user's own table\n")
    (work / "config.json").write_text(json.dumps({"model_type": "something else"}))
    (work / "checkpoints").mkdir()
    os.link(trained / "checkpoints" / "best.pt", work / "checkpoints" / "epoch_0001.pt")
    before = files_under(work)
    runs = tmp_path / "runs"
    for n, source in enumerate((work / "models" / "best.pt", work / "checkpoints" / "epoch_0001.pt"), 1):
        code, out, err = run_main(["--resume", source, "--out", runs, "--epochs", "2"], capsys)
        assert code == 0, err
        assert files_under(work) == before
        new = sorted(runs.iterdir())
        assert len(new) == n and new[-1].name.startswith("run-")
        assert f"run folder {new[-1]}: a new one, since {source} is not in a run folder" in out, out
        assert [r["epoch"] for r in read_metrics(new[-1])] == ["1", "2"]
        assert load_checkpoint(new[-1])["epoch"] == 2
    # a run folder's checkpoint (here given as the folder) continues in its folder
    run = copy_run(trained, tmp_path / "runs2" / "r")
    code, out, err = run_main(["--resume", run / "checkpoints", "--epochs", "2"], capsys)
    assert code == 0 and f"run folder {run}\n" in out, err
    assert [r["epoch"] for r in read_metrics(run)] == ["1", "2"] and sorted(os.listdir(run.parent)) == ["r"]
