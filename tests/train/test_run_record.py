"""What a run records beside its settings: config.json's and every checkpoint's "resolved" (the version, the
layout, the devices, the world, the data folder as an absolute path, the decoding), the settings left where
their readers look; and the commands its messages advise, named as the user started it."""
import json
import sys
from dataclasses import fields

import pytest
import torch

import alexnet2gpu
from alexnet2gpu.train.advice import command_line
from alexnet2gpu.train.config import Config
from alexnet2gpu.train.run_folder import run_folder_of
from alexnet2gpu.weights.checkpoint import load_checkpoint
from tests.helpers.runs import TINY, run_main

SETTINGS = {f.name for f in fields(Config)}


def read_config(run):
    return json.loads((run / "config.json").read_text())


@pytest.mark.slow
def test_config_json_and_checkpoints_record_what_ran(tiny, tmp_path, capsys, monkeypatch):
    """The settings say data null, device auto; what ran is the built-in set's cache folder (made absolute:
    here the cache is named by a relative path) and one device per tower. A resume in another layout
    records its own invocation, in the same run folder: config.json is still train.py's."""
    monkeypatch.chdir(tiny.parent.parent)
    monkeypatch.setenv("ALEXNET2GPU_CACHE", tiny.parent.name)  # `tiny` is the built-in set of these sizes
    built_in = ["--num-classes", "2", "--train-per-class", "2", "--val-per-class", "1"]
    code, out, err = run_main(built_in + ["--out", tmp_path / "runs", "--run-name", "r", "--epochs", "2",
                                          "--max-steps", "1", "--layout", "two-device", "--devices", "cpu,cpu"]
                              + TINY, capsys)
    assert code == 0, err
    run = tmp_path / "runs" / "r"
    saved = read_config(run)
    assert set(saved) == SETTINGS | {"resolved"}  # the settings' keys as before, and one more
    assert (saved["data"], saved["layout"], saved["decode"]) == (None, "two-device", "auto")
    resolved = saved["resolved"]
    assert resolved["alexnet2gpu"] == alexnet2gpu.__version__ and resolved["torch"] == torch.__version__
    assert resolved["data"] == str(tiny) and resolved["data_built_in"] is True
    assert (resolved["layout"], resolved["devices"], resolved["gpus"]) == ("two-device", ["cpu", "cpu"], [])
    assert (resolved["world_size"], resolved["tower_pairs"], resolved["num_classes"]) == (1, 1, 2)
    assert (resolved["decode"], resolved["cpu_decode_share"]) == ("cpu", None)
    state = load_checkpoint(run / "checkpoints" / "epoch_0001.pt")
    assert state["resolved"] == resolved and resolved["mean"] == state["mean"]
    assert state["config"] == {k: v for k, v in saved.items() if k != "resolved"}  # what a resume reads

    assert run_folder_of(run / "checkpoints" / "epoch_0001.pt") == run
    code, out, err = run_main(["--resume", run, "--out", tmp_path / "runs", "--layout", "merged"] + TINY, capsys)
    assert code == 0, err
    assert f"run folder {run}" in out and not (tmp_path / "runs" / "r-2").exists()
    again = read_config(run)["resolved"]
    assert (again["layout"], again["devices"], again["data"]) == ("merged", ["cpu"], str(tiny))
    assert again["started"] >= resolved["started"]
    assert load_checkpoint(run / "checkpoints" / "epoch_0002.pt")["resolved"] == again


def test_the_advice_names_the_command_the_user_started(monkeypatch):
    """Installed with pip there may be no train.py: a run started as alexnet2gpu-train is told to go on with it."""
    flags = {"resume": "runs/r/checkpoints/epoch_0001.pt", "out": "runs"}
    monkeypatch.setattr(sys, "argv", ["train.py"])
    assert command_line(flags) == "python train.py --resume runs/r/checkpoints/epoch_0001.pt --out runs"
    monkeypatch.setattr(sys, "argv", ["/home/me/.local/bin/alexnet2gpu-train", "--data", "d"])
    assert command_line(flags) == "alexnet2gpu-train --resume runs/r/checkpoints/epoch_0001.pt --out runs"
    assert command_line(flags, distributed=True).startswith("torchrun <its options as before> alexnet2gpu-train --resume")
