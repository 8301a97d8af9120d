"""bench.py and its counts: well-formed output and honest arithmetic, never a speed."""
import dataclasses
import json
import subprocess
import sys

import pytest
import torch

from alexnet2gpu.bench import report, runner
from alexnet2gpu.bench.measure import (alexnet_multiply_adds, allreduce_bytes, count_multiply_adds, step_flops,
                                       tower_exchange_bytes)
from alexnet2gpu.bench.variants import VARIANTS, available, build_variant
from alexnet2gpu.cli import bench
from alexnet2gpu.data.synthetic import ensure_synthetic
from alexnet2gpu.model.layouts.merged import AlexNet
from alexnet2gpu.model.layouts.two_device import TwoTowerAlexNet
from tests.helpers import ROOT
from tests.helpers.child_env import child_env

KEYS = {"variant", "mode", "device", "batch_size", "images_per_s", "ms_per_step", "gflops", "peak_fraction",
        "processes", "threads", "peak_memory_mb", "exchange_mb", "dtype", "load"}


def test_flops_come_from_the_layer_table():
    assert alexnet_multiply_adds() == count_multiply_adds(AlexNet()) == 724_406_816
    assert step_flops(724_406_816, 128, "train") == pytest.approx(4.35e9 * 128, rel=0.01)  # docs/paper.md §1


def test_exchange_bytes_match_the_two_device_log():
    """Forward, tower 0 receives what tower 1 sends (its maps before conv3/fc6/fc7 and its fc7 output)."""
    model = TwoTowerAlexNet(num_classes=10, devices=("cpu", "cpu"))
    with torch.no_grad():
        model(torch.zeros(3, 3, 224, 224))
    received_by_0 = sum(b for i, (layer, b) in enumerate(model.exchanges) if i % 2 == 0 or layer == "fc8")
    assert tower_exchange_bytes(3, "infer") == received_by_0
    assert tower_exchange_bytes(128, "train") == pytest.approx(30.0e6, rel=0.02)  # docs/paper.md §1: what crosses between the towers
    assert allreduce_bytes(60_965_224, 2) == 60_965_224 * 4  # a 2-rank ring sends the gradients once


def test_the_compile_rows_compile_and_wait_for_the_flag_on_a_cpu(monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda model: compiled.append(type(model).__name__) or model)
    for name in ("merged-compile", "torchvision-compile"):
        build_variant(VARIANTS[name], torch.device("cpu"), num_classes=10)
    assert compiled == ["AlexNet", "AlexNet"]  # ours, then torchvision's
    assert available(VARIANTS["merged-compile"], torch.device("cpu"), allow_compile=False).startswith("needs --compile")
    assert available(VARIANTS["merged-bf16-compile"], torch.device("cpu"), True) == "needs a CUDA device"


def test_the_graphed_rows_are_their_eager_rows_with_graphs_and_skip_on_the_cpu():
    for name in ("merged", "two-device", "merged-bf16", "torchvision-bf16"):
        graphed = VARIANTS[name + "-graphs"]
        eager = dataclasses.replace(VARIANTS[name], name=graphed.name, what=graphed.what, graphs=True)
        assert graphed == dataclasses.replace(eager, needs=("cuda",)), name
        assert available(graphed, torch.device("cpu"), allow_compile=True) == "needs a CUDA device"
    from alexnet2gpu.bench import runner
    opts = runner.Options(batch_sizes=(2,), modes=("train",), rows=("train-loop-graphs",), warmup=0, steps=1,
                          threads=1, num_classes=10, log=lambda *a: None)
    skipped, = runner.run(opts)
    assert (skipped["variant"], skipped["mode"], skipped["note"]) == ("train-loop-graphs", "skipped",
                                                                      "needs a CUDA device")


def test_bad_options_are_one_clear_line(capsys):
    assert bench.main(["--rows", "merged,fastest"]) == 2
    assert "unknown benchmark row(s) fastest" in capsys.readouterr().err
    assert bench.main(["--batch-sizes", "8,x"]) == 2
    assert "--batch-sizes must be whole numbers" in capsys.readouterr().err


def test_on_cuda_the_default_is_the_goal_rows_in_training_at_batch_256():
    """`bench.py --device cuda` alone runs the GPU comparison (minutes, not every variant twice); a CPU run
    keeps every row, both modes and the paper's batch; explicit options win on both."""
    opts = bench.options(bench.parse_args(["--device", "cuda"]))
    assert (opts.rows, opts.modes, opts.batch_sizes) == (runner.CUDA_ROWS, ("train",), (256,))
    from alexnet2gpu.bench.report import GOALS
    assert set(opts.rows) >= {row for goal in GOALS["cuda"] for row in goal[1:3] if row}
    opts = bench.options(bench.parse_args(["--device", "cpu"]))
    assert (opts.rows, opts.modes, opts.batch_sizes) == (runner.ALL_ROWS, ("train", "infer"), (128,))
    opts = bench.options(bench.parse_args(["--device", "cuda", "--mode", "infer", "--batch-size", "64"]))
    assert (opts.modes, opts.batch_sizes) == (("infer",), (64,))


def test_plot_draws_images_per_second(monkeypatch, tmp_path):
    """Every measured row's images/s as a bar, training rows first, each with its ratio to merged; skipped rows
    and the matmul rate left out; the device and batch in the title."""
    from alexnet2gpu.train import plot
    calls = []
    monkeypatch.setattr(plot, "bar_chart", lambda path, labels, values, **kw: calls.append((labels, values, kw)))
    rows = [{"variant": "merged", "mode": "infer", "batch_size": 8, "images_per_s": 9.0, "device": "cpu"},
            {"variant": "merged", "mode": "train", "batch_size": 8, "images_per_s": 3.0, "device": "cpu"},
            {"variant": "two-device", "mode": "train", "batch_size": 8, "images_per_s": 2.4, "device": "cpu"},
            {"variant": "input-pipeline", "mode": "load", "batch_size": 8, "images_per_s": 6.0, "device": "cpu"},
            {"variant": "matmul-float32", "mode": "matmul", "batch_size": 8, "images_per_s": 0.0, "device": "cpu"},
            {"variant": "train-loop-graphs", "mode": "skipped", "batch_size": 8, "device": "cpu"}]
    report.write_plot(tmp_path / "p.png", rows)
    (labels, values, kw), = calls
    assert labels == ["merged (train)", "two-device (train)", "merged (infer)", "input-pipeline (load)"]
    assert values == [3.0, 2.4, 9.0, 6.0]
    assert kw["notes"] == ["", "(0.80x merged)", "", "(2.00x merged)"]  # the loader against the training step
    assert kw["groups"] == ["training", "training", "inference", "input pipeline"]
    assert kw["title"] == "AlexNet images/s on cpu, batch 8" and kw["xlabel"] == "images/s"


def test_plot_of_several_batch_sizes_is_a_png(monkeypatch, tmp_path):
    from PIL import Image

    from alexnet2gpu.train import plot
    drawn, bar_chart = [], plot.bar_chart
    monkeypatch.setattr(plot, "bar_chart", lambda *a, **kw: drawn.append(bar_chart(*a, **kw)))
    rows = [{"variant": v, "mode": "train", "batch_size": b, "images_per_s": x, "device": "cpu"}
            for b in (8, 16) for v, x in (("merged", 3.0 * b), ("torchvision", 2.0 * b))]
    report.write_plot(tmp_path / "p.png", rows)
    ax, = drawn[0].axes
    assert ax.get_title() == "AlexNet images/s on cpu, batches 8, 16"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["merged (train, batch 8)", "torchvision (train, batch 8)",
                                                            "merged (train, batch 16)", "torchvision (train, batch 16)"]
    assert [p.get_width() for p in ax.patches] == [24.0, 16.0, 48.0, 32.0]
    with Image.open(tmp_path / "p.png") as img:
        img.load()
        assert img.format == "PNG" and img.width > img.height
    report.write_plot(tmp_path / "none.png", rows[:0])  # every row skipped: an empty chart that says so
    assert Image.open(tmp_path / "none.png").format == "PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["none.png", "p.png"]


@pytest.mark.slow
def test_quick_json_is_well_formed(tmp_path):
    out = tmp_path / "bench.json"
    env = child_env()
    rows = "merged,two-device,torchvision,tower-parallel,data-parallel,input-pipeline"
    data = ensure_synthetic(num_classes=2, train_per_class=4, val_per_class=1, cache_dir=tmp_path, log=lambda *a: None)
    cmd = [sys.executable, str(ROOT / "bench.py"), "--quick", "--batch-sizes", "2", "--warmup", "0", "--steps", "1",
           "--rows", rows, "--threads", "1", "--num-classes", "10", "--json", str(out), "--data", str(data),
           "--workers", "0"]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "speed goals" in proc.stdout
    records = json.loads(out.read_text())
    measured = [r for r in records if r["mode"] != "skipped"]
    seen = {(r["variant"], r["mode"]) for r in measured}
    for variant in ("merged", "two-device", "torchvision", "tower-parallel", "data-parallel"):
        assert {(variant, "train"), (variant, "infer")} <= seen
    assert ("matmul-float32", "matmul") in seen
    loader = next(r for r in measured if r["mode"] == "load")
    assert loader["variant"] == "input-pipeline" and loader["images_per_s"] > 0 and loader["processes"] == 0
    for r in measured:
        assert KEYS <= r.keys()
        if r["mode"] == "load":
            continue
        assert r["batch_size"] == 2 and r["ms_per_step"] > 0 and r["gflops"] > 0 and r["peak_fraction"] > 0
        assert r["images_per_s"] > 0 or r["mode"] == "matmul"
    ddp = next(r for r in measured if r["variant"] == "data-parallel" and r["mode"] == "train")
    assert ddp["processes"] == 2 and len(ddp["peak_memory_mb"]) == 2 and ddp["exchange_mb"] > 200


def test_a_row_that_cannot_run_becomes_a_note_and_the_measured_rows_stay(monkeypatch):
    """The train-loop row fails outright, a two-process row's workers fail, and the torchvision row's step
    runs out of memory in a timed round (after warming up): each becomes a skipped row saying why."""
    from alexnet2gpu.bench import runner

    def fails(*a, **k):
        raise RuntimeError("no room for this row")

    real_step = runner.make_train_step

    def late_oom(model, x, y, amp, graphs=False):
        step, calls = real_step(model, x, y, amp, graphs), []
        if not type(model).__module__.startswith("torchvision"):
            return step

        def flaky():
            calls.append(1)
            if len(calls) > 1:  # the peak-memory step passes; the first timed one fails
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            step()
        return flaky

    monkeypatch.setattr(runner, "measure_train_loop", fails)
    monkeypatch.setattr(runner, "run_two_process", fails)
    monkeypatch.setattr(runner, "make_train_step", late_oom)
    opts = runner.Options(batch_sizes=(2,), modes=("train",), rows=("merged", "torchvision", "train-loop",
                          "tower-parallel"), warmup=0, steps=2, threads=1, num_classes=10, log=lambda *a: None)
    records = {r["variant"]: r for r in runner.run(opts)}
    assert records["merged"]["mode"] == "train" and records["merged"]["images_per_s"] > 0
    assert records["matmul-float32"]["gflops"] > 0
    assert records["torchvision"]["mode"] == "skipped" and "train failed: CUDA out of memory" in records["torchvision"]["note"]
    for row in ("train-loop", "tower-parallel"):
        assert records[row]["mode"] == "skipped" and "no room for this row" in records[row]["note"]
    assert "skipped" in report.table(list(records.values()))


def test_an_unwritable_json_path_keeps_the_printed_table(monkeypatch, tmp_path, capsys):
    from alexnet2gpu.bench import runner

    row = {"variant": "merged", "mode": "train", "device": "cpu", "device_type": "cpu", "batch_size": 2,
           "processes": 1, "threads": 1, "ms_per_step": 100.0, "images_per_s": 20.0, "gflops": 1.0,
           "peak_fraction": 0.1, "peak_memory_mb": None, "exchange_mb": 0.0, "note": "", "settings": ""}
    monkeypatch.setattr(runner, "run", lambda opts: [row])
    target = tmp_path / "a-file"
    target.write_text("")
    assert bench.main(["--rows", "merged", "--json", str(target / "bench.json")]) == 1
    out = capsys.readouterr()
    assert "merged" in out.out and f"could not write {target / 'bench.json'}" in out.err and "Traceback" not in out.err
