"""Reports: colourfulness per tower, metrics.csv, the matplotlib charts (bench.py calls bar_chart), the progress
bar."""
import csv
import errno
import io
import math
import subprocess
import sys

import pytest
import torch
from PIL import Image

from alexnet2gpu.progress import Progress
from alexnet2gpu.train.plot import bar_chart
from alexnet2gpu.train.report import (COLUMNS, colourfulness, curves_figure, save_conv1_kernels, save_curves,
                                      write_metrics)
from tests.helpers import ROOT
from tests.helpers.child_env import child_env


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
    _assert_curves_png(tmp_path / "curves.png")
    assert Image.open(tmp_path / "k.png").width > 2 * Image.open(tmp_path / "k.png").height  # two tower grids
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "k.png", "metrics.csv"]


def _assert_curves_png(path):
    """A whole PNG that decodes, of four panels' size: wider than high, at least 1000 x 600 pixels."""
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.load()  # decodes every pixel: a truncated file raises here
        assert img.width > img.height and img.width >= 1000 and img.height >= 600


def _panels(fig):
    """{panel title: {series name: y values}} from the figure's lines (the legend names them)."""
    out = {}
    for ax in fig.axes:
        legend = ax.get_legend()
        names = [t.get_text().split(": ")[0] for t in legend.get_texts()] if legend else []
        out[ax.get_title()] = {name: list(line.get_ydata()) for name, line in zip(names, ax.get_lines())}
    return out


def test_curves_draw_every_metric_by_epoch():
    rows = [dict(epoch=e, train_loss=2.0 / e, val_loss=2.1 / e, val_top1_error=90.0 / e, val_top5_error=50.0 / e,
                 lr=0.01 if e < 3 else 0.001, images_per_s=10.0 * e, seconds=1.5) for e in (1, 2, 3)]
    fig = curves_figure(rows, "run-1: 3 epochs")
    panels = _panels(fig)
    column = {key: [r[key] for r in rows] for key in rows[0]}
    assert panels["loss"] == {"train loss": column["train_loss"], "val loss": column["val_loss"]}
    assert panels["validation error"] == {"val top-1 error": column["val_top1_error"],
                                          "val top-5 error": column["val_top5_error"]}
    assert panels["learning rate"] == {"lr": [0.01, 0.01, 0.001]}
    assert panels["throughput"] == {"training images/s": [10.0, 20.0, 30.0]}
    by_title = {ax.get_title(): ax for ax in fig.axes}
    assert by_title["learning rate"].get_yscale() == "log" and by_title["loss"].get_yscale() == "linear"
    assert all(list(line.get_xdata()) == [1, 2, 3] for line in by_title["loss"].get_lines())
    assert fig.get_suptitle() == "run-1: 3 epochs"
    lo, hi = by_title["throughput"].get_xlim()
    assert [t for t in by_title["throughput"].get_xticks() if lo <= t <= hi] == [1, 2, 3]  # whole epochs
    assert by_title["throughput"].get_xlabel() == "epoch" and by_title["loss"].get_ylabel() == "cross-entropy"


def test_curves_title_names_the_run_and_its_best_epoch(tmp_path, monkeypatch):
    from alexnet2gpu.train import report
    titles = []
    monkeypatch.setattr(report, "curves_figure", lambda rows, title: titles.append(title) or curves_figure(rows, title))
    rows = [dict(epoch=e, train_loss=1.0, val_loss=1.0, val_top1_error=err, val_top5_error=10.0, lr=0.01)
            for e, err in ((1, 60.0), (2, 40.0), (3, 45.0))]
    (tmp_path / "run-7").mkdir()
    save_curves(tmp_path / "run-7" / "curves.png", rows)
    assert titles == ["run-7: 3 epochs, best val top-1 error 40.00 % at epoch 2"]
    _assert_curves_png(tmp_path / "run-7" / "curves.png")


def test_a_one_epoch_run_shows_its_values_beside_visible_markers(tmp_path):
    rows = [dict(epoch=1, train_loss=2.25, val_loss=2.3, val_top1_error=88.0, val_top5_error=47.0, lr=0.01,
                 images_per_s=12.5, seconds=2.0)]
    fig = curves_figure(rows)
    for ax in fig.axes:
        assert all(line.get_marker() == "o" and line.get_markersize() >= 4 for line in ax.get_lines())
    written = {ax.get_title(): sorted(t.get_text() for t in ax.texts) for ax in fig.axes}
    assert written == {"loss": ["2.25", "2.3"], "validation error": ["47", "88"], "learning rate": ["0.01"],
                       "throughput": ["12.5"]}
    lo, hi = fig.axes[3].get_xlim()
    assert [t for t in fig.axes[3].get_xticks() if lo <= t <= hi] == [1]  # one whole epoch, no 0.8 or 1.2
    save_curves(tmp_path / "curves.png", rows)
    _assert_curves_png(tmp_path / "curves.png")


def test_top5_of_five_classes_or_fewer_is_left_out():
    """With 5 classes or fewer metrics.csv has no top-5 figure (an empty cell): the chart draws top-1 alone."""
    rows = [dict(epoch=e, train_loss=1.0, val_loss=1.0, val_top1_error=30.0, val_top5_error="", lr=0.01)
            for e in (1, 2)]
    error = next(ax for ax in curves_figure(rows).axes if ax.get_title() == "validation error")
    assert [t.get_text() for t in error.get_legend().get_texts()] == ["val top-1 error: 30"]


def test_rows_of_an_older_run_without_the_newer_columns_are_drawn(tmp_path):
    rows = [dict(epoch=1, train_loss=2.0, val_loss=2.1, val_top1_error=90.0, val_top5_error=50.0, lr=0.01)]
    fig = curves_figure(rows)
    speed = next(ax for ax in fig.axes if ax.get_title() == "throughput")
    assert not speed.get_lines() and [t.get_text() for t in speed.texts] == ["no values"]
    save_curves(tmp_path / "curves.png", rows)
    _assert_curves_png(tmp_path / "curves.png")


def test_bar_chart_draws_each_value_and_writes_a_png(tmp_path):
    fig = bar_chart(tmp_path / "bar.png", ["merged", "two-device", "torchvision"], [10.0, 12.5, float("nan")],
                    "images/s by layout", "images/s", groups=["train", "train", "infer"], notes=["", "(1.25x)", ""])
    ax, = fig.axes
    assert [p.get_width() for p in ax.patches] == [10.0, 12.5, 0.0]  # no bar for what was not measured
    assert [t.get_text() for t in ax.get_yticklabels()] == ["merged", "two-device", "torchvision"]
    assert [t.get_text() for t in ax.texts] == ["10", "12.5  (1.25x)", "not measured"]
    assert ax.patches[0].get_facecolor() == ax.patches[1].get_facecolor() != ax.patches[2].get_facecolor()
    with Image.open(tmp_path / "bar.png") as img:
        img.load()
        assert img.format == "PNG" and img.width > img.height
    assert [p.name for p in tmp_path.iterdir()] == ["bar.png"]


def test_importing_the_package_leaves_matplotlib_unloaded():
    """matplotlib is imported when a chart is drawn, not when train.py or bench.py start."""
    code = ("import sys, alexnet2gpu.train.run_folder, alexnet2gpu.train.trainer, alexnet2gpu.bench.report; "
            "print('matplotlib' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], env=child_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False"


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


@pytest.mark.parametrize("loss", [7.3942e23, 1.7e308, float("inf")])
def test_curves_of_a_diverged_first_epoch_are_drawn(tmp_path, loss):
    """One epoch whose training loss exploded and whose val loss is NaN. A single huge finite value once made
    the old chart's tick step zero; near the float maximum matplotlib's own axis arithmetic overflows. The
    value is drawn where it can be, else marked with an x at the top, and the legend says it in numbers."""
    rows = [dict(epoch=1, train_loss=loss, val_loss=float("nan"), val_top1_error=50.0, val_top5_error=0.0,
                 lr=0.01, images_per_s=5.7, seconds=2.8)]
    save_curves(tmp_path / "curves.png", rows)
    _assert_curves_png(tmp_path / "curves.png")
    loss_panel = next(ax for ax in curves_figure(rows).axes if ax.get_title() == "loss")
    legend = [t.get_text() for t in loss_panel.get_legend().get_texts()]
    assert legend[:2] == [f"train loss: {loss:.3g}", "val loss: nan"] and legend[2].startswith("x: NaN, inf")
    marks = [line for line in loss_panel.get_lines() if line.get_marker() == "x"]
    assert [list(line.get_xdata()) for line in marks] == ([[1]] if math.isclose(loss, 7.3942e23) else [[1], [1]])


def test_nan_and_inf_in_the_middle_of_a_run_leave_gaps():
    rows = [dict(epoch=e, train_loss=v, val_loss=1.0, val_top1_error=50.0, val_top5_error=20.0, lr=0.01)
            for e, v in ((1, 2.0), (2, float("nan")), (3, float("inf")), (4, 1.5))]
    loss_panel = next(ax for ax in curves_figure(rows).axes if ax.get_title() == "loss")
    train = loss_panel.get_lines()[0].get_ydata()
    assert train[0] == 2.0 and math.isnan(train[1]) and math.isnan(train[2]) and train[3] == 1.5


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

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    print_png = FigureCanvasAgg.print_png

    def full_png(self, fp, **k):  # so does matplotlib, after a layout pass that draws into memory
        if hasattr(fp, "write"):
            return print_png(self, fp, metadata=k.get("metadata"), pil_kwargs=k.get("pil_kwargs"))
        full(self, fp)

    def full_row(self, row):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    monkeypatch.setattr(FigureCanvasAgg, "print_png", full_png)
    monkeypatch.setattr(csv.DictWriter, "writerow", full_row)
    rows.append(dict(rows[0], epoch=2))
    for write in (lambda: write_metrics(tmp_path / "metrics.csv", rows),
                  lambda: save_curves(tmp_path / "curves.png", rows),
                  lambda: save_conv1_kernels(tmp_path / "conv1_kernels.png", torch.randn(96, 3, 11, 11))):
        with pytest.raises(OSError, match="No space left"):
            write()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
