"""What a run records beside its settings, and the commands its messages advise, named as the user started it."""
import sys

from alexnet2gpu.train.advice import command_line


def test_the_advice_names_the_command_the_user_started(monkeypatch):
    """Installed with pip there may be no train.py: a run started as alexnet2gpu-train is told to go on with it."""
    flags = {"resume": "runs/r/checkpoints/epoch_0001.pt", "out": "runs"}
    monkeypatch.setattr(sys, "argv", ["train.py"])
    assert command_line(flags) == "python train.py --resume runs/r/checkpoints/epoch_0001.pt --out runs"
    monkeypatch.setattr(sys, "argv", ["/home/me/.local/bin/alexnet2gpu-train", "--data", "d"])
    assert command_line(flags) == "alexnet2gpu-train --resume runs/r/checkpoints/epoch_0001.pt --out runs"
    assert command_line(flags, distributed=True).startswith("torchrun <its options as before> alexnet2gpu-train --resume")
