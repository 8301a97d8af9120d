"""Logs that work in a batch job: progress lines when stdout is not a terminal (every --log-every steps, or
about every 30 s), and TensorBoard event files whose curves continue after a resume without duplicate steps."""
import io
import os
import re
import subprocess
import sys
from collections import defaultdict

import pytest
import torch

from alexnet2gpu.train import batch_log
from alexnet2gpu.train.batch_log import StepLog
from tests.helpers import ROOT
from tests.helpers.child_env import child_env
from tests.helpers.runs import tiny_data
from tests.helpers.weights import train

LINE = re.compile(r"^\d\d:\d\d:\d\d step (\d+) \| epoch (\d+)/(\d+) (\d+) % \((\d+)/(\d+)\) \| loss [\d.]+ \| lr [\d.e-]+ \| "
                  r"[\d.]+ img/s \| data wait \d+ %$")


class Board:  # collects what board.Board would write
    def __init__(self):
        self.rows = []

    def scalars(self, group, step, values):
        self.rows.append((group, step, values))


def optimizer(lr=0.01):
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)


def test_a_line_every_n_steps_with_rates_since_the_last_line():
    stream, board = io.StringIO(), Board()
    log = StepLog(optimizer(0.005), torch.device("cpu"), every=3, board=board, num_pairs=2, stream=stream)
    log.begin(2, 90, 100)
    start = log.last[0]
    assert [s for s in range(1, 8) if log.due(s, start)] == [3, 6]
    log.record(3, 1.25, images=30, wait_seconds=1.0, now=start + 4.0)
    log.record(6, 0.5, images=60, wait_seconds=1.0, now=start + 6.0)
    first, second = stream.getvalue().splitlines()
    assert LINE.match(first) and "step 3 | epoch 2/90 30 % (30/100) | loss 1.2500 | lr 0.005 | 15.0 img/s | data wait 25 %" in first
    assert "step 6 | epoch 2/90 60 % (60/100) | loss 0.5000 | lr 0.005 | 30.0 img/s | data wait 0 %" in second
    assert "GPU" not in first  # peak GPU memory only on CUDA
    group, step, values = board.rows[1]
    assert (group, step) == ("train", 6) and values["loss"] == 0.5 and values["epoch"] == pytest.approx(1.6)
    assert set(values) == {"loss", "lr", "images_per_s", "data_wait_share", "epoch"}


def test_by_default_a_line_about_every_30_seconds_and_none_when_off():
    log = StepLog(optimizer(), torch.device("cpu"), stream=io.StringIO())
    log.begin(1, 1, 10)
    start = log.last[0]
    assert not log.due(1, start + batch_log.DEFAULT_SECONDS - 1) and log.due(1, start + batch_log.DEFAULT_SECONDS)
    log.record(5, 1.0, 5, 0.0, start + batch_log.DEFAULT_SECONDS)
    assert not log.due(6, start + batch_log.DEFAULT_SECONDS + 1)  # measured from the last line
    assert not StepLog(optimizer(), torch.device("cpu"), every=0).due(5, start + 1e6)
    assert not StepLog(optimizer(), torch.device("cpu"), lines=False).due(5, start + 1e6)


def test_lines_only_off_a_terminal_unless_asked(monkeypatch, tmp_path, capsys):
    data = tiny_data(tmp_path / "data")
    monkeypatch.setattr(batch_log, "DEFAULT_SECONDS", 0.0)  # the time-based default: a line every step
    common = ["--data", str(data), "--max-steps", "1", "--batch-size", "2", "--workers", "0", "--device", "cpu",
              "--out", str(tmp_path / "runs")]
    assert train.main(common) == 0
    assert [l for l in capsys.readouterr().out.splitlines() if LINE.match(l)]  # captured: not a terminal
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert train.main(common) == 0
    assert not [l for l in capsys.readouterr().out.splitlines() if " step 1 | " in l]  # the bar's job there


def tensorboard_events(folder):
    """(raw, shown): steps per tag as written, and as TensorBoard shows them once a resumed writer's
    purge_step (a session START event at that step) has dropped the events it supersedes."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.compat.proto.event_pb2 import SessionLog

    raw, shown = defaultdict(list), defaultdict(list)
    for name in sorted(os.listdir(folder), key=lambda n: int(n.split(".")[3])):  # by creation time
        for event in EventFileLoader(str(folder / name)).Load():
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                for tag in shown:
                    shown[tag] = [s for s in shown[tag] if s < event.step]
            for value in event.summary.value:
                raw[value.tag].append(event.step)
                shown[value.tag].append(event.step)
    return raw, shown


@pytest.mark.slow
def test_redirected_stdout_gets_lines_and_tensorboard_continues_after_a_resume(tmp_path):
    data = tiny_data(tmp_path / "data")
    args = [sys.executable, str(ROOT / "train.py"), "--data", str(data), "--out", str(tmp_path), "--run-name", "r",
            "--epochs", "2", "--batch-size", "2", "--workers", "0", "--device", "cpu", "--keep", "3", "--init",
            "caffe", "--log-every", "1", "--tensorboard"]
    env = child_env(OMP_NUM_THREADS="1")
    with open(tmp_path / "log.txt", "w") as log:  # stdout is a file, as under nohup or Slurm
        assert subprocess.run(args, stdout=log, stderr=subprocess.STDOUT, env=env).returncode == 0
    lines = [LINE.match(l) for l in (tmp_path / "log.txt").read_text().splitlines() if LINE.match(l)]
    assert [(int(m[1]), int(m[2]), int(m[5])) for m in lines] == [(1, 1, 2), (2, 1, 4), (3, 2, 2), (4, 2, 4)]
    # as if the run died in epoch 2 after logging it: resume from epoch 1, train epoch 2 again
    (tmp_path / "r" / "checkpoints" / "epoch_0002.pt").unlink()
    (tmp_path / "r" / "checkpoints" / "best.pt").unlink()
    resumed = subprocess.run(args[:2] + ["--resume", str(tmp_path / "r"), "--workers", "0", "--device", "cpu"],
                             capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    raw, shown = tensorboard_events(tmp_path / "r" / "tensorboard")
    for tag in ("train/loss", "train/lr", "train/images_per_s", "train/data_wait_share", "train/epoch"):
        assert shown[tag] == [1, 2, 3, 4], tag
    assert raw["train/loss"] == [1, 2, 3, 4, 3, 4]  # epoch 2 was logged twice: the purge is what removes it
    for tag in ("epoch/train_loss", "epoch/val_loss", "epoch/val_top1_error", "epoch/lr", "conv1/tower0",
                "conv1/tower1"):
        assert shown[tag] == [2, 4], tag
    assert "epoch/val_top5_error" not in raw  # 2 classes: a top-5 error would always be 0
