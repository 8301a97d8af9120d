"""Reports: colourfulness per tower, metrics.csv, the PIL charts (bench.py calls bar_chart), the progress bar."""
import csv
import errno
import io

import pytest
import torch
from PIL import Image

from alexnet2gpu.progress import Progress
from alexnet2gpu.train.plot import bar_chart, line_chart
from alexnet2gpu.train.report import COLUMNS, colourfulness, save_conv1_kernels, save_curves, write_metrics


def test_colourfulness_tells_grey_towers_from_colour_towers():
    w = torch.randn(96, 3, 11, 11)
    w[:48] = w[:48, :1].expand(-1, 3, -1, -1)  # tower 0: the same kernel in R, G and B
    w[48:, 1:] = 0  # tower 1: red only
    grey, colour = colourfulness(w)
    assert grey < 1e-6 and colour > 0.8
    assert colourfulness(torch.randn(96, 1, 11, 11)) == []


def test_metrics_and_pictures(tmp_path):
    rows = [dict(epoch=e, train_loss=2.0 / e, val_loss=2.1 / e, val_top1_error=90.0 / e, val_top5_error=50.0 / e,
                 lr=0.01, images_per_s=10.0, seconds=1.5) for e in (1, 2, 3)]
    write_metrics(tmp_path / "metrics.csv", rows)
    with open(tmp_path / "metrics.csv") as f:
        read = list(csv.DictReader(f))
    assert tuple(read[0]) == COLUMNS and [r["epoch"] for r in read] == ["1", "2", "3"]
    assert float(read[2]["val_top1_error"]) == 30.0
    save_curves(tmp_path / "curves.png", rows)
    save_conv1_kernels(tmp_path / "k.png", torch.randn(96, 3, 11, 11))
    assert Image.open(tmp_path / "curves.png").size == (1280, 400)
    assert Image.open(tmp_path / "k.png").width > 2 * Image.open(tmp_path / "k.png").height  # two tower grids
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "k.png", "metrics.csv"]


def test_charts_take_bench_py_arguments(tmp_path):
    bar_chart(tmp_path / "bar.png", ["merged", "two-device", "torchvision"], [10.0, 12.5, float("nan")],
              "images/s by layout", "images/s")
    line_chart(tmp_path / "line.png", {"a": ([1, 2, 3], [3.0, 1.0, 2.0])}, "t", "x", "y")
    assert Image.open(tmp_path / "bar.png").size == Image.open(tmp_path / "line.png").size == (640, 400)


def test_progress_is_quiet_off_a_terminal_and_shows_rate_and_eta_on_one():
    quiet = io.StringIO()
    p = Progress(100, "epoch 1", stream=quiet)
    p.update(50)
    p.close()
    assert quiet.getvalue() == ""
    loud = io.StringIO()
    p = Progress(100, "epoch 1", enabled=True, stream=loud)
    p.update(100, "loss 1.0")
    assert "100/100" in loud.getvalue() and "img/s" in loud.getvalue() and "ETA" in loud.getvalue()


def test_curves_of_a_diverged_first_epoch_are_drawn(tmp_path):
    """One epoch whose training loss exploded and whose val loss is NaN: the chart's one finite value is far
    larger than the room the axis used to add around a single value, which made its tick step zero."""
    rows = [dict(epoch=1, train_loss=7.3942e23, val_loss=float("nan"), val_top1_error=50.0, val_top5_error=0.0,
                 lr=0.01, images_per_s=5.7, seconds=2.8)]
    save_curves(tmp_path / "curves.png", rows)
    assert Image.open(tmp_path / "curves.png").size == (1280, 400)


def test_a_run_of_5_classes_or_fewer_has_no_top5_cell_or_curve(tmp_path):
    rows = [dict(epoch=e, train_loss=2.0, val_loss=2.1, val_top1_error=40.0, lr=0.01) for e in (1, 2)]
    write_metrics(tmp_path / "metrics.csv", rows)
    header, first = (tmp_path / "metrics.csv").read_text().splitlines()[:2]
    assert first.split(",")[header.split(",").index("val_top5_error")] == ""
    save_curves(tmp_path / "curves.png", rows)  # a top-1 curve alone
    with_top5 = tmp_path / "with.png"
    save_curves(with_top5, [dict(r, val_top5_error=10.0) for r in rows])
    assert Image.open(tmp_path / "curves.png").tobytes() != Image.open(with_top5).tobytes()


def test_a_full_disk_leaves_the_previous_reports_whole(tmp_path, monkeypatch):
    """The disk fills while the reports are rewritten: each file keeps its previous content (never a truncated
    picture or table), and no temporary file is left behind."""
    rows = [dict(epoch=1, train_loss=2.0, val_loss=2.1, val_top1_error=90.0, val_top5_error=50.0, lr=0.01)]
    write_metrics(tmp_path / "metrics.csv", rows)
    save_curves(tmp_path / "curves.png", rows)
    save_conv1_kernels(tmp_path / "conv1_kernels.png", torch.randn(96, 3, 11, 11))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def full(self, fp, *a, **k):  # PIL gets as far as a few bytes
        with open(fp, "wb") as f:
            f.write(b"\x89PNG\r\n")
        raise OSError(errno.ENOSPC, "No space left on device")

    def full_row(self, row):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    monkeypatch.setattr(csv.DictWriter, "writerow", full_row)
    rows.append(dict(rows[0], epoch=2))
    for write in (lambda: write_metrics(tmp_path / "metrics.csv", rows),
                  lambda: save_curves(tmp_path / "curves.png", rows),
                  lambda: save_conv1_kernels(tmp_path / "conv1_kernels.png", torch.randn(96, 3, 11, 11))):
        with pytest.raises(OSError, match="No space left"):
            write()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
