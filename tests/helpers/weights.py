"""Shared by the weights tests: an untrained network written as a train.py checkpoint, and train.py's main."""
from dataclasses import asdict
from pathlib import Path

import torch

from alexnet2gpu import AlexNet
from alexnet2gpu.cli import train  # noqa: F401 (the tests call train.main)
from alexnet2gpu.train.config import Config
from alexnet2gpu.weights import checkpoint as ckpt


def write_untrained_checkpoint(run_dir: Path, num_classes: int = 10, in_channels: int = 3, seed: int = 1,
                               classes: list[str] | None = None) -> Path:
    """best.pt of a run that never trained: weights drawn with `seed`, as train.py writes checkpoints."""
    torch.manual_seed(seed)
    model = AlexNet(num_classes, in_channels, init="caffe")
    weights = model.state_dict()
    state = dict(model=weights, momentum={k: torch.zeros_like(v) for k, v in weights.items()}, schedule={}, step=0,
                 config=asdict(Config(num_classes=num_classes, in_channels=in_channels)), metrics=[],
                 classes=classes or [f"c{i}" for i in range(num_classes)], mean=[120.0, 115.0, 100.0][:in_channels],
                 world_size=1, num_pairs=1)
    ckpt.write_checkpoint(run_dir, state, epoch=1, is_best=True)
    return Path(run_dir) / ckpt.CHECKPOINTS / ckpt.BEST
