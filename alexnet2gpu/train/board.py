"""TensorBoard event files in RUN/tensorboard (train.py --tensorboard; needs the `tensorboard` extra).

Every scalar is plotted against the training step, epoch figures included (at the step that ended the
epoch), so one x axis serves all. A resumed run opens the writer with purge_step = the checkpoint's step
+ 1: TensorBoard then drops whatever the interrupted run logged after that checkpoint, and the curves
continue without duplicate steps. The epoch's figures are flushed before its checkpoint is written, so
a checkpoint never lacks them.
"""
from __future__ import annotations

from pathlib import Path

import torch

from alexnet2gpu.optional import require

FOLDER = "tensorboard"
EPOCH_SCALARS = ("train_loss", "val_loss", "val_top1_error", "val_top5_error", "lr", "images_per_s",
                 "step_images_per_s", "colour_tower0", "colour_tower1")


class Board:
    def __init__(self, run_dir, resumed_step: int = 0):
        require("tensorboard", "--tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.path = Path(run_dir) / FOLDER
        self.writer = SummaryWriter(str(self.path), purge_step=resumed_step + 1 if resumed_step else None)

    def scalars(self, group: str, step: int, values: dict) -> None:
        for name, value in values.items():
            self.writer.add_scalar(f"{group}/{name}", value, step)

    def epoch(self, row: dict, step: int, conv1_weight: torch.Tensor) -> None:
        """The epoch's metrics.csv figures and the conv1 kernels of each tower, then flush to disk."""
        self.scalars("epoch", step, {"epoch": row["epoch"], **{k: row[k] for k in EPOCH_SCALARS if k in row}})
        for tower, grid in enumerate(conv1_grids(conv1_weight)):
            self.writer.add_image(f"conv1/tower{tower}", grid, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def conv1_grids(conv1_weight: torch.Tensor, towers: int = 2, scale: int = 4) -> list[torch.Tensor]:
    """One 3 x H x W image per tower: its kernels in rows of 8 (as the paper's Figure 3), each stretched to
    0..1 on its own as in conv1_kernels.png, magnified `scale` times."""
    from torchvision.utils import make_grid

    w = conv1_weight.detach().float().cpu()
    w = w.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    return [make_grid(part, nrow=8, padding=2, normalize=True, scale_each=True, pad_value=1.0)
            for part in w.chunk(towers)]
