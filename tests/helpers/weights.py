"""Shared by the weights tests: an untrained network written as a train.py checkpoint, train.py's main, and
bytes flipped inside a weights file as a failing disk or copy flips them."""
import json
import struct
import zipfile
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


def flip_bytes(path: Path, entry: str | None = None, count: int = 4096) -> str:
    """Invert `count` bytes in the middle of one entry's data, leaving the file's structure intact: in a .pt
    (zip) file the largest entry, in a .safetensors file `entry` (a tensor's name). Returns the entry's name as
    the loader names it (data/N for a .pt)."""
    with open(path, "r+b") as f:
        if str(path).endswith(".safetensors"):
            size = struct.unpack("<Q", f.read(8))[0]
            begin, end = json.loads(f.read(size))[entry]["data_offsets"]
            start, length, name = 8 + size + begin, end - begin, entry
        else:
            with zipfile.ZipFile(path) as z:
                info = max(z.infolist(), key=lambda i: i.file_size)
            f.seek(info.header_offset + 26)  # the local header's name and extra field lengths
            name_len, extra_len = struct.unpack("<HH", f.read(4))
            start, length = info.header_offset + 30 + name_len + extra_len, info.file_size
            name = info.filename.split("/", 1)[1]  # torch.save puts every entry under a folder of its own
        count = min(count, length)
        start += (length - count) // 2
        f.seek(start)
        data = f.read(count)
        f.seek(start)
        f.write(bytes(b ^ 0xFF for b in data))
    return name
