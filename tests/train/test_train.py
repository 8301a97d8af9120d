"""train.py end to end: the command lines people type, each bad input's one-sentence message, a NaN stop
that keeps the last good checkpoint, and a run killed with SIGKILL that resumes to the same metrics."""
import multiprocessing.process
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from alexnet2gpu.cli import train
from alexnet2gpu.weights.checkpoint import load_checkpoint
from tests.helpers import ROOT
from tests.helpers.child_env import child_env
from tests.helpers.runs import TINY, read_metrics, run_main


def test_the_paper_command_line_and_the_demo_defaults():
    cfg, _ = train.build_config(train.parser().parse_args(
        ["--epochs", "90", "--in_channels", "3", "--num_classes", "1000", "--data", "/x"]))
    assert (cfg.epochs, cfg.in_channels, cfg.num_classes, cfg.batch_size, cfg.lr, cfg.init) == (90, 3, 1000, 128, 0.01, "paper")
    assert (cfg.momentum, cfg.weight_decay, cfg.pca, cfg.crop, cfg.schedule) == (0.9, 5e-4, "paper", 224, "plateau")
    demo, given = train.build_config(train.parser().parse_args([]))
    assert demo.data is None and demo.num_classes == train.DEMO["num_classes"] and given == {}
    cfg, given = train.build_config(train.parser().parse_args(["--batch-size", "7", "--num-classes", "3"]))
    assert (cfg.batch_size, cfg.num_classes) == (7, 3) and given == {"batch_size": 7, "num_classes": 3}


def test_the_settings_table_is_plain_data_with_the_worlds_timeout():
    """config.py imports only the standard library (no torch, nothing of the package), and its --dist-timeout
    default is the one world.setup uses when called without one."""
    import ast

    from alexnet2gpu.distributed import world
    from alexnet2gpu.train import config
    tree = ast.parse(Path(config.__file__).read_text())
    imported = {n.module if isinstance(n, ast.ImportFrom) else a.name for n in ast.walk(tree)
                if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    assert imported <= {"__future__", "dataclasses"}, imported
    assert config.Config().dist_timeout == world.DEFAULT_TIMEOUT_S


def test_effective_batch_and_lr_rule():
    from alexnet2gpu.distributed.world import Context
    from alexnet2gpu.train.config import Config
    from alexnet2gpu.train.setup import effective_lr

    assert effective_lr(Config(batch_size=256, lr_scaling="linear"), Context())[0] == pytest.approx(0.02)
    lr, rule = effective_lr(Config(batch_size=128, lr_scaling="linear"), Context(num_pairs=4))
    assert lr == pytest.approx(0.04) and "effective batch 512" in rule
    assert effective_lr(Config(batch_size=256), Context())[0] == 0.01  # no scaling unless asked


def make_odd_folders(tmp_path, tiny):
    different = tmp_path / "different"
    for split, names in (("train", ["a", "b"]), ("val", ["a", "c"])):
        for n in names:
            (different / split / n).mkdir(parents=True)
            (different / split / n / "x.jpg").write_bytes((tiny / "val" / "00_disc" / "val_00_00000.jpg").read_bytes())
    (tmp_path / "empty" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "val").mkdir()
    broken = tmp_path / "broken"
    for split in ("train", "val"):
        for n in ("a", "b"):
            (broken / split / n).mkdir(parents=True)
            (broken / split / n / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    single = tmp_path / "single"
    for split in ("train", "val"):
        shutil.copytree(tiny / split / "00_disc", single / split / "00_disc")
    return dict(different=different, empty=tmp_path / "empty", broken=broken, junk=tmp_path / "junk.pt", single=single)


@pytest.mark.parametrize("case, args, message", [
    ("missing", ["--data", "{tmp}/nowhere"], "does not exist: pass --data DIR"),
    ("empty", ["--data", "{empty}"], "has no class folders"),
    ("classes", ["--data", "{different}"], "train/ and val/ under .* have different classes"),
    ("count", ["--data", "{tiny}", "--num-classes", "1000"], "--num-classes is 1000 but .* has 2 class folders"),
    ("one-class", ["--data", "{single}"], "has one class folder \\(00_disc\\): .*learns nothing.*at least 2"),
    ("one-built-in-class", ["--num-classes", "1"], "--num-classes must be at least 2 .*learns nothing"),
    ("channels", ["--data", "{tiny}", "--in-channels", "2"], "--in-channels 2: image folders give 1"),
    ("amp", ["--data", "{tiny}", "--amp", "bf16", "--device", "cpu"], "--amp bf16 needs a CUDA device"),
    ("cuda-graphs", ["--data", "{tiny}", "--cuda-graphs"], "--cuda-graphs needs the model on a CUDA device"),
    ("corrupt", ["--data", "{broken}", "--max-corrupt", "0"], "could not be read \\(more than --max-corrupt 0\\).*bad.jpg"),
    ("resume", ["--data", "{tiny}", "--resume", "{junk}"], "checkpoint .*junk.pt could not be read"),
    ("layout", ["--data", "{tiny}", "--layout", "two-device"], "the two-device layout needs two devices"),
    ("lr", ["--lr", "nan"], "--lr must be a number above 0, got nan"),
    ("momentum", ["--momentum", "nan"], "--momentum must be a number at least 0 and below 1, got nan"),
    ("weight-decay", ["--weight-decay", "-1"], "--weight-decay must be a number at least 0"),
    ("dropout", ["--dropout", "1.5"], "--dropout must be a number at least 0 and below 1"),
    ("seed", ["--seed", "-1"], "--seed must be a whole number at least 0 and at most 4294967295, got -1"),
    ("mean-images", ["--data", "{tiny}", "--mean-images", "0"], "--mean-images must be a whole number at least 1"),
    ("mean", ["--data", "{tiny}", "--mean", "nan,1,2"], "--mean needs finite numbers"),
    ("mean-range", ["--data", "{tiny}", "--mean=-500,0,0"], "--mean needs numbers on the 0..255 scale, got \\[-500.0"),
    ("log-every", ["--log-every", "-1"], "--log-every must be a whole number at least 0, got -1"),
    ("keep", ["--keep", "-1"], "--keep must be a whole number at least 1"),
    ("max-corrupt", ["--max-corrupt", "-1"], "--max-corrupt must be a whole number at least 0"),
    ("dist-timeout", ["--dist-timeout", "nan"], "--dist-timeout must be a number above 0"),
    ("lr-steps", ["--lr-steps", "0,5"], "--lr-steps are epochs .* at least 1; got \\[0\\]"),
    ("run-name", ["--run-name", "../elsewhere"], "--run-name '../elsewhere' must be a plain folder name"),
    ("devices", ["--data", "{tiny}", "--layout", "merged", "--devices", "cpu,cpu"],
     "--devices places the two-device layout's towers, and this run's layout is merged"),
    ("one-device", ["--data", "{tiny}", "--devices", "cpu"], "devices must be two entries, one per tower"),
])
def test_bad_input_gets_one_sentence_and_a_non_zero_exit(case, args, message, tmp_path, tiny, capsys):
    paths = dict(make_odd_folders(tmp_path, tiny), tmp=tmp_path, tiny=tiny)
    code, out, err = run_main(["--out", tmp_path / "runs"] + TINY + [a.format(**paths) for a in args], capsys)
    assert code == 1
    assert "Traceback" not in err and err.startswith("train.py: error: ")
    import re
    assert re.search(message, err), err
    assert not list((tmp_path / "runs").rglob("*.pt"))


@pytest.mark.slow
def test_a_short_run_leaves_every_output_and_skips_a_corrupt_image(tmp_path, tiny, capsys):
    data = tmp_path / "data"
    subprocess.run(["cp", "-r", str(tiny), str(data)], check=True)
    bad = data / "train" / "01_square" / "zz_broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 cut short")
    code, out, err = run_main(["--data", data, "--out", tmp_path / "runs", "--run-name", "r", "--max-steps", "1",
                               "--init", "caffe", "--layout", "two-device", "--devices", "cpu,cpu"] + TINY, capsys)
    assert code == 0, err
    run = tmp_path / "runs" / "r"
    for name in ("config.json", "metrics.csv", "curves.png", "conv1_kernels.png", "checkpoints/epoch_0001.pt",
                 "checkpoints/best.pt", "train.log"):
        assert (run / name).is_file(), name
    rows = read_metrics(run)
    assert len(rows) == 1 and rows[0]["steps"] == "1" and rows[0]["corrupt_images"] == "1"
    for column in ("epoch", "train_loss", "val_loss", "val_top1_error", "lr", "images_per_s",
                   "seconds", "loader_images_per_s", "step_images_per_s", "colour_tower0", "colour_tower1"):
        assert rows[0][column] != "", column
    # 2 classes: top-5 would always be right, so no figure; the banner says why
    assert rows[0]["val_top5_error"] == "" and "2 classes (too few for a top-5 error, which is left out)" in out
    assert [line for line in out.splitlines() if "top-5" in line] == [next(line for line in out.splitlines()
                                                                          if line.startswith("data "))]
    assert f"skipped unreadable image {bad}" in out and "epoch 1/" in out and "config:" in out
    assert "layout two-device" in out
    state = load_checkpoint(run / "checkpoints" / "best.pt")
    assert state["config"]["max_steps"] == 1 and state["epoch"] == 1 and set(state["momentum"]) == set(state["model"])
    # evaluated in the merged layout: checkpoints are canonical, whatever layout wrote them
    code, out, err = run_main(["--evaluate", run / "checkpoints" / "best.pt", "--workers", "0", "--layout", "merged"], capsys)
    assert code == 0, err
    assert "layout merged" in out
    assert " 1 crop(s): top-1 error" in out and "10 crop(s): top-1 error" in out and "top-5" not in out


@pytest.mark.slow
def test_a_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny, capsys, monkeypatch):
    real = torch.nn.functional.cross_entropy
    calls = []

    def poisoned(logits, targets, *a, **k):  # the training loss of step 2 (epoch 2) turns NaN
        calls.append(1)
        return real(logits, targets, *a, **k) * (float("nan") if len(calls) == 2 else 1.0)

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", poisoned)
    code, out, err = run_main(["--data", tiny, "--out", tmp_path, "--run-name", "r", "--epochs", "3",
                               "--batch-size", "4", "--workers", "0"], capsys)
    assert code == 1 and "Traceback" not in err
    assert "the training loss became nan at step 2" in err and "epoch_0001.pt" in err, err
    assert len(read_metrics(tmp_path / "r")) == 1
    assert (tmp_path / "r" / "train.log").read_text() == out + err  # the error too, as printed
    assert load_checkpoint(tmp_path / "r")["epoch"] == 1


@pytest.mark.slow
def test_loader_workers_start_once_per_run_and_end_with_it(tmp_path, tiny, capsys, monkeypatch):
    """With worker processes, the train and val loaders each start theirs at the first epoch and keep them:
    a run of three epochs starts two, not six. They are gone when the run ends, by --max-steps mid-epoch or
    by an error (a NaN loss), even while the error's traceback, which holds the loaders, is still kept."""
    from alexnet2gpu.errors import TrainError
    from alexnet2gpu.train.trainer import fit
    processes, real_start = [], multiprocessing.process.BaseProcess.start

    def start(self):  # every process started (a loader's workers are such processes)
        real_start(self)
        processes.append(self)

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", start)
    real_loss, calls = torch.nn.functional.cross_entropy, []

    def poisoned(logits, targets, *a, **k):  # the training loss of step 3 (epoch 3's) turns NaN
        calls.append(1)
        return real_loss(logits, targets, *a, **k) * (float("nan") if len(calls) == 3 else 1.0)

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", poisoned)
    common = ["--data", tiny, "--out", tmp_path, "--mean", "120,110,100", "--workers", "1", "--keep", "1",
              "--device", "cpu"]
    cfg, given = train.build_config(train.parser().parse_args(
        [str(a) for a in common + ["--run-name", "nan", "--epochs", "3", "--batch-size", "4"]]))  # 1 step an epoch
    with pytest.raises(TrainError, match="the training loss became nan at step 3.*epoch_0002.pt") as caught:
        fit(cfg, given)
    assert len(processes) == 2
    assert caught.tb is not None and not any(p.is_alive() for p in processes)  # though its traceback holds the run

    processes.clear()
    steps = ["--run-name", "steps", "--epochs", "1", "--batch-size", "2", "--max-steps", "1"]
    code, out, err = run_main(common + steps, capsys)
    assert code == 0 and [r["steps"] for r in read_metrics(tmp_path / "steps")] == ["1"], err  # 1 step of 2
    assert len(processes) == 2 and not any(p.is_alive() for p in processes)


def train_subprocess(args, **kw):
    env = child_env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, str(ROOT / "train.py")] + [str(a) for a in args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.mark.slow
def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path, tiny):
    """Kill a run with SIGKILL right after epoch 1's checkpoint, resume it with --resume auto (and another
    worker count): its per-epoch losses, errors, lrs and conv1 colourfulness equal those of a run never stopped.
    A mismatch means some randomness (dropout RNG, crops, flips, PCA alphas, batch order) was not restored."""
    common = ["--data", tiny, "--epochs", "2", "--batch-size", "2", "--keep", "3", "--init", "caffe", "--device", "cpu"]
    whole = train_subprocess(common + ["--out", tmp_path / "whole", "--workers", "0"])  # beside the killed one
    killed = train_subprocess(common + ["--out", tmp_path / "killed", "--workers", "0"])
    deadline = time.time() + 600
    while not list((tmp_path / "killed").rglob("epoch_0001.pt")) and killed.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()
    assert killed.returncode == -signal.SIGKILL
    out, _ = whole.communicate(timeout=600)
    assert whole.returncode == 0, out
    resumed = train_subprocess(common + ["--out", tmp_path / "killed", "--workers", "1", "--resume", "auto"])
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    assert "resuming from" in out and "epoch_0001.pt" in out

    def comparable(path):
        rows = read_metrics(next(Path(path).iterdir()))
        keep = ("epoch", "train_loss", "val_loss", "val_top1_error", "val_top5_error", "lr", "steps",
                "colour_tower0", "colour_tower1")
        return [{k: r[k] for k in keep} for r in rows]

    assert comparable(tmp_path / "whole") == comparable(tmp_path / "killed")
    assert len(comparable(tmp_path / "whole")) == 2
