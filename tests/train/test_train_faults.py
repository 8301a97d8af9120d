"""train.py when things go wrong: a run folder another run holds, data that moved, a split nothing can be
read from, a checkpoint that fails to write, an output or cache folder that cannot be written. Each ends
in a correct result or one sentence, and never loses a checkpoint or disagrees with metrics.csv."""
import errno
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from alexnet2gpu.train.runlock import LOCK_FILE, claim_run_folder
from alexnet2gpu.weights import checkpoint as ckpt
from alexnet2gpu.weights.checkpoint import load_checkpoint
from tests.helpers import ROOT
from tests.helpers.runs import TINY, read_metrics, run_main, tiny_data


def copy_with_classes(tiny: Path, dst: Path, rename: dict | None = None) -> Path:
    shutil.copytree(tiny, dst)
    for old, new in (rename or {}).items():
        for split in ("train", "val"):
            (dst / split / old).rename(dst / split / new)
    return dst


def test_a_run_folder_held_by_a_live_run_is_refused_and_freed_when_it_dies(tmp_path, tiny, capsys):
    folder = tmp_path / "runs" / "r"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from alexnet2gpu.train.runlock import "
                               "claim_run_folder; lock = claim_run_folder(sys.argv[1]); print('held', flush=True); "
                               "time.sleep(600)", str(folder)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, out, err = run_main(["--data", tiny, "--out", tmp_path / "runs", "--run-name", "r", "--max-steps", "1"]
                                  + TINY, capsys)
        assert code == 1 and "Traceback" not in err
        assert f"run folder {folder} is in use by another run (process {holder.pid} on " in err, err
        assert not list(folder.rglob("*.pt")) and not (folder / "config.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock = claim_run_folder(folder)  # a run killed with SIGKILL leaves no stuck lock
    assert lock.path == folder and (folder / LOCK_FILE).read_text().split()[0].isdigit()
    numbered = claim_run_folder(folder, numbered=True)  # an automatic name never joins another run's folder
    assert numbered.path == folder.with_name("r-2")
    lock.release(), numbered.release()


@pytest.mark.parametrize("name", ["epoch_0005.pt", "best.pt"])  # best.pt alone: the epoch files were pruned
def test_a_new_run_never_writes_into_a_folder_holding_checkpoints(tmp_path, tiny, capsys, name):
    folder = tmp_path / "runs" / "r"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / name).write_bytes(b"another run's checkpoint")
    code, out, err = run_main(["--data", tiny, "--out", tmp_path / "runs", "--run-name", "r"] + TINY, capsys)
    assert code == 1 and f"run folder {folder} holds another run's checkpoints: continue that run with --resume" in err
    assert (folder / "checkpoints" / name).read_bytes() == b"another run's checkpoint"


@pytest.mark.parametrize("where", ["out", "cache"])
def test_an_output_or_cache_folder_that_cannot_be_written_is_one_sentence(where, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a-file"  # a path under a file cannot be created, even by root
    blocker.write_text("")
    monkeypatch.setenv("ALEXNET2GPU_CACHE", str(blocker / "cache" if where == "cache" else tmp_path / "cache"))
    args = ["--out", blocker / "runs"] if where == "out" else ["--out", tmp_path / "runs"]
    if where == "out":
        args += ["--data", tiny_data(tmp_path / "data")]
    code, out, err = run_main(args + ["--max-steps", "1"] + TINY, capsys)
    assert code == 1 and "Traceback" not in err and err.count("\n") == 1, err
    wanted = "cannot create the run folder" if where == "out" else "cannot write the built-in data set to"
    assert wanted in err and str(blocker) in err and "Not a directory" in err, err


@pytest.mark.slow
def test_a_split_with_no_readable_image_stops_and_skipped_images_are_counted(tmp_path, tiny, capsys):
    data = copy_with_classes(tiny, tmp_path / "data")
    first, second = sorted((data / "val").rglob("*.jpg"))
    first.write_bytes(b"\xff\xd8 not a jpeg")
    code, out, err = run_main(["--data", data, "--out", tmp_path / "runs", "--run-name", "one", "--max-steps", "1"]
                              + TINY, capsys)
    assert code == 0, err
    assert "val error top-1 " in out and "(over 1 images, 1 unreadable skipped)" in out
    row = read_metrics(tmp_path / "runs" / "one")[0]
    assert (row["val_images"], row["val_skipped"]) == ("1", "1")
    second.write_bytes(b"\xff\xd8 not a jpeg either")
    code, out, err = run_main(["--data", data, "--out", tmp_path / "runs", "--run-name", "none", "--max-steps", "1"]
                              + TINY, capsys)
    assert code == 1 and "Traceback" not in err
    assert f"none of the 2 val images under {data / 'val'} could be read" in err, err
    assert not list((tmp_path / "runs" / "none").rglob("*.pt"))  # an error over no image is never a best epoch


@pytest.mark.slow
def test_a_failed_checkpoint_write_and_moved_data_lose_nothing(tmp_path, tiny, capsys, monkeypatch):
    """Epoch 2's checkpoint fails to write: metrics.csv keeps only epoch 1, as the checkpoint does. The
    data folder then moves: the run resumes from the new place, but not from data with other classes."""
    data = copy_with_classes(tiny, tmp_path / "data")
    real = ckpt.atomic_save
    full = lambda obj, path: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")) \
        if "epoch_0002" in str(path) else real(obj, path)
    monkeypatch.setattr(ckpt, "atomic_save", full)
    run = tmp_path / "runs" / "r"
    common = ["--out", tmp_path / "runs", "--epochs", "2"] + TINY
    code, out, err = run_main(["--data", data, "--run-name", "r"] + common, capsys)
    assert code == 1 and "could not write checkpoint" in err and "No space left on device" in err
    assert [r["epoch"] for r in read_metrics(run)] == ["1"] and load_checkpoint(run)["epoch"] == 1
    monkeypatch.setattr(ckpt, "atomic_save", real)

    moved = data.rename(tmp_path / "moved")
    code, out, err = run_main(["--resume", run] + common, capsys)
    assert code == 1 and f"the run's data folder {data} does not exist: if it moved, pass --data" in err, err
    other = copy_with_classes(tiny, tmp_path / "other", {"01_square": "01_circle"})
    for flag in ("--resume", "--evaluate"):
        code, out, err = run_main([flag, run if flag == "--resume" else run / "checkpoints" / "best.pt",
                                   "--data", other] + common, capsys)
        assert code == 1 and f"{other} has other classes than checkpoint" in err, (flag, err)
        assert "only here: ['01_circle'], only in the checkpoint: ['01_square']" in err
    code, out, err = run_main(["--resume", run, "--data", moved] + common, capsys)
    assert code == 0, err
    assert f"the data moved: {data} -> {moved}, with the same 2 classes" in out
    assert [r["epoch"] for r in read_metrics(run)] == ["1", "2"] and load_checkpoint(run)["epoch"] == 2


def test_what_counts_as_stopped_by_sigterm():
    from alexnet2gpu.cli.train import Terminated, _by_sigterm
    worker = RuntimeError("DataLoader worker (pid 7) is killed by signal: Terminated. ")
    assert _by_sigterm(Terminated()) and _by_sigterm(worker)
    try:
        try:
            raise Terminated
        except Terminated:
            raise RuntimeError("DataLoader worker (pid 7) exited unexpectedly")
    except RuntimeError as unwinding:  # raised while Terminated unwound the run
        assert _by_sigterm(unwinding)
    assert not _by_sigterm(RuntimeError("CUDA out of memory")) and not _by_sigterm(None)


@pytest.mark.slow
def test_sigterm_to_the_process_group_stops_with_one_sentence(tmp_path, tiny):
    """What a job scheduler (or torchrun) does: SIGTERM to train.py and its loader workers at once. The workers'
    death must not turn the stop into DataLoader's traceback (its SIGCHLD handler raises in the main process)."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--data", str(tiny), "--out", str(tmp_path),
                             "--epochs", "100", "--batch-size", "2", "--workers", "1", "--log-every", "1",
                             "--device", "cpu"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    seen = []
    try:
        for line in proc.stdout:  # a worker is up once steps are logged
            seen.append(line)
            if line.split()[1:3] == ["step", "3"]:
                os.killpg(proc.pid, signal.SIGTERM)
                break
        out = "".join(seen) + proc.stdout.read()
        assert proc.wait(timeout=120) == 143, out[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "train.py: stopped by SIGTERM" in out and "Traceback" not in out, out[-3000:]
    assert "torchrun" not in out and "continue with: python train.py --resume " in out, out[-3000:]
