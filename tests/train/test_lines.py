"""What a run prints: the epoch line's fields in words, top-5 error only where it means something (more than
5 classes), and the progress bar counting to --max-steps when the run stops there."""
import pytest
import torch

from alexnet2gpu.data.device_input import InputSpec
from alexnet2gpu.data.folders import CorruptLog, EpochSampler, FolderDataset, make_loader, open_folders
from alexnet2gpu.train import engine
from alexnet2gpu.train.engine import bar_total, evaluate, train_one_epoch
from alexnet2gpu.train.trainer import epoch_line

CPU = torch.device("cpu")
ROW = dict(epoch=3, train_loss=2.2, val_loss=2.25, val_top1_error=60.0, lr=0.01, images_per_s=12.34,
           loader_images_per_s=179.4, step_images_per_s=13.8, colour_tower0=0.812, colour_tower1=0.431, seconds=31.2)


def test_the_epoch_line_says_what_each_figure_is():
    assert epoch_line(dict(ROW, val_top5_error=12.0), 90) == (
        "epoch 3/90 | train loss 2.200 | val loss 2.250 | val error top-1 60.0 %, top-5 12.0 % | lr 0.01 | "
        "12.3 img/s (loader up to 179 img/s, model step up to 13.8 img/s) | "
        "conv1 colourfulness: tower 0 0.81, tower 1 0.43 | 31 s")
    few = epoch_line(dict(ROW, val_images=9, val_skipped=1), 90)  # 5 classes or fewer: no top-5
    assert "top-5" not in few and "| val error top-1 60.0 % (over 9 images, 1 unreadable skipped) | lr" in few


def loop_parts(tiny, num_classes=2, batch=2):
    splits = open_folders(tiny, None, warn=lambda *a: None)
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(12, num_classes))
    spec = InputSpec(CPU, torch.tensor([120.0, 110.0, 100.0]), "none")
    train = make_loader(FolderDataset(splits.train, "train"), EpochSampler(len(splits.train), 1), batch, 0)
    val = make_loader(FolderDataset(splits.val, "center"), EpochSampler(len(splits.val), 0, shuffle=False), batch, 0)
    return model, spec, train, val, len(splits.train)


def test_top5_error_only_over_more_than_5_classes(tiny):
    model, spec, _, val, _ = loop_parts(tiny, num_classes=6)
    corrupt = CorruptLog(5, log=lambda *a: None)
    assert evaluate(model, val, spec, corrupt=corrupt, num_classes=6, show=False)["top5_error"] is not None
    assert evaluate(model, val, spec, corrupt=corrupt, num_classes=5, show=False)["top5_error"] is None


def test_the_progress_bar_counts_to_the_step_the_run_stops_at(tiny, monkeypatch):
    made = []

    class Recorded(engine.Progress):
        def __init__(self, total, desc, **kw):
            super().__init__(total, desc, **kw)
            made.append(self)

    monkeypatch.setattr(engine, "Progress", Recorded)
    model, spec, train, _, images = loop_parts(tiny)
    assert images == 4  # 2 steps of 2 an epoch
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def epoch(first_step, max_steps):
        made.clear()
        stats = train_one_epoch(model, optimizer, train, spec, corrupt=CorruptLog(5, log=lambda *a: None),
                                total_images=images, desc="epoch 2/90", first_step=first_step, max_steps=max_steps,
                                show=False, batch_size=2)
        return made[0].total, made[0].desc, stats.steps

    assert epoch(7, 8) == (2, "epoch 2/90 to --max-steps (step 8)", 1)  # 1 step left: 2 images, not 4
    assert epoch(7, 9) == (4, "epoch 2/90", 2)  # the run stops at the epoch's end
    assert epoch(7, None) == (4, "epoch 2/90", 2)
    assert made[0].done == made[0].total  # the bar reached its end


@pytest.mark.parametrize("first, stop, batch, want", [(0, None, 128, 1000), (10, 12, 128, 256), (10, 100, 128, 1000),
                                                      (10, 10, 128, 0), (10, 12, None, 1000)])
def test_bar_total(first, stop, batch, want):
    assert bar_total(1000, batch, first, stop) == want
