"""bench's word on its own figures: the load warning and the speed goals it cannot judge. Loads are injected
(measure.machine_load), records are made up: no real load and no speed is asserted."""
import json

import pytest

from alexnet2gpu.bench import measure, report
from alexnet2gpu.cli import bench

HEADER = ("variant                mode   batch procs   ms/step    img/s vs merged  GFLOP/s %matmul     peak MB  "
          "exch MB  note")


def _row(variant, ips=10.0, pf=0.5, batch=8, device_type="cpu", dtype="float32", mode="train"):
    return {"variant": variant, "mode": mode, "device": "test", "device_type": device_type, "batch_size": batch,
            "processes": 1, "threads": 2, "ms_per_step": 1e3 * batch / ips, "images_per_s": ips, "gflops": 1.0,
            "peak_fraction": pf, "peak_memory_mb": None, "exchange_mb": 0.0, "note": "", "settings": "",
            "dtype": dtype}


def _skipped(variant, note, batch=8):
    return {"variant": variant, "mode": "skipped", "device": "test", "device_type": "cpu", "batch_size": batch,
            "note": note}


def _goals(records) -> dict:
    return {(g["goal"], g["batch_size"]): g for g in report.goals(records)}


def _watch(monkeypatch, load, cores, seconds, threads):
    """A LoadWatch that reads `load` on `cores`, `seconds` after bench began timing."""
    monkeypatch.setattr(measure, "machine_load", lambda: (load, cores))
    logs = []
    watch = measure.LoadWatch(threads, log=logs.append, clock=lambda: float(seconds))
    watch.start = 0.0
    return watch, logs


@pytest.mark.parametrize("load, cores, seconds, threads, shared", [
    (0.4, 2, 0, 2, False),    # before timing: a daemon's worth of load is let pass
    (0.9, 2, 0, 2, True),     # before timing bench adds nothing: 0.9 is other work on bench's 2 cores
    (2.4, 2, 600, 2, False),  # after ten minutes bench's own 2 threads explain 2.0 of it
    (2.6, 2, 600, 2, True),
    (1.6, 2, 10, 2, True),    # ten seconds in, bench's threads can explain only 0.31
    (7.0, 8, 0, 1, False),    # bench's 1 thread leaves 7 of 8 cores to the others
    (7.6, 8, 0, 1, True),
])
def test_other_work_is_the_load_beyond_benchs_own_threads(monkeypatch, load, cores, seconds, threads, shared):
    watch, logs = _watch(monkeypatch, load, cores, seconds, threads)
    reading = watch.read("after the one-process rows at batch 8")
    assert reading["shared"] is shared and watch.summary()["shared"] is shared
    assert reading["load_1min"] == load and reading["machine_cores"] == cores and reading["bench_threads"] == threads
    assert len(logs) == shared  # said once on stderr, as soon as it is seen
    watch.read("again")
    assert len(logs) == shared and len(watch.summary()["readings"]) == 2


def test_no_load_average_means_no_readings_and_no_warning(monkeypatch):
    monkeypatch.setattr(measure, "machine_load", lambda: None)
    watch = measure.LoadWatch(2)
    assert watch.read("before timing") is None
    records = [dict(_row("merged"), load=watch.summary()), dict(_row("torchvision"), load=watch.summary())]
    assert watch.summary() == {"shared": False, "margin_cores": measure.LOAD_MARGIN, "readings": []}
    assert report.load_warning(records) == ""
    assert _goals(records)[("merged vs torchvision", 8)]["judged"]


def test_a_loaded_run_warns_before_the_table_records_its_load_and_judges_no_goal(monkeypatch, tmp_path, capsys):
    """A real run of two tiny rows; the load is calm before timing and busy after the one-process rows."""
    seen = iter([(0.0, 2), (9.0, 2)])
    monkeypatch.setattr(measure, "machine_load", lambda: next(seen))
    out = tmp_path / "bench.json"
    assert bench.main(["--rows", "merged,torchvision", "--mode", "train", "--batch-size", "2", "--warmup", "0",
                       "--steps", "1", "--threads", "1", "--num-classes", "10", "--json", str(out)]) == 0
    printed = capsys.readouterr()
    first, second = printed.out.splitlines()[:2]
    assert first.startswith("warning: other work shared the cores: 1-minute load average 9.00 on 2 cores after "
                            "the one-process rows at batch 2")
    assert "ratios between one-process rows (timed round-robin) still compare" in first.lower()
    assert "%matmul" in first and "unreliable" in first
    assert second == HEADER
    assert "other work shares the cores (after the one-process rows at batch 2" in printed.err
    goal_lines = printed.out.split("speed goals")[1].splitlines()[1:]
    assert len(goal_lines) == 2  # merged vs torchvision, merged vs the matmul rate
    for line in goal_lines:
        assert line.endswith("not judged: other work shared the cores (load 9.00 on 2 cores)"), line
        assert "met" not in line.lower().replace("not judged", "")
    records = json.loads(out.read_text())
    load = records[0]["load"]
    assert all(r["load"] == load for r in records) and load["shared"] is True
    assert [(r["when"], r["shared"]) for r in load["readings"]] == [
        ("before timing", False), ("after the one-process rows at batch 2", True)]
    assert {r["dtype"] for r in records} == {"float32"}


def test_a_calm_run_prints_no_warning_and_judges_its_goals():
    calm = {"shared": False, "margin_cores": 0.5, "readings": [
        {"when": "before timing", "load_1min": 0.1, "machine_cores": 2, "bench_threads": 2, "others": 0.1,
         "shared": False}]}
    records = [dict(_row("merged", ips=10.0), load=calm), dict(_row("torchvision", ips=12.0), load=calm)]
    assert report.load_warning(records) == ""
    goal = _goals(records)[("merged vs torchvision", 8)]
    assert (goal["judged"], goal["met"], goal["reason"]) == (True, False, "")
    assert "NOT MET" in report.goals_text([goal])


def test_over_100_percent_of_matmul_on_a_cpu_is_footnoted_and_its_goal_not_judged():
    records = [_row("merged", ips=10.0, pf=1.17), _row("torchvision", ips=9.0, pf=0.9),
               _row("matmul-float32", mode="matmul", pf=1.0)]
    lines = report.table(records).splitlines()
    assert lines[0] == HEADER
    merged, torchvision = lines[2], lines[3]
    assert "117.0%*" in merged and "90.0% " in torchvision and "*" not in torchvision
    assert merged.index("      -") == torchvision.index("      -")  # the star keeps every column in place
    assert lines[-1] == report.OVER_MATMUL_NOTE
    goals = _goals(records)
    matmul = goals[("merged vs matrix-multiply rate", 8)]
    assert not matmul["judged"] and matmul["met"] is None and matmul["value"] == pytest.approx(1.17)
    assert matmul["reason"] == ("merged ran at 117 % of the matrix multiply, faster than the reference it is "
                                "measured against")
    assert goals[("merged vs torchvision", 8)]["met"] is True  # a ratio of two rows stays judged
    text = report.goals_text(list(goals.values()))
    assert "1.170  (goal >= 0.60)  not judged: merged ran at 117 %" in text


def test_on_cuda_only_the_fp32_rows_may_pass_the_matmul():
    """cuDNN runs fp32 convolutions in TF32, the fp32 matmul does not: explained, not flagged. A bf16 row
    over its bf16 matmul has no such excuse."""
    fp32 = [_row("merged", pf=1.2, device_type="cuda"), _row("torchvision", pf=1.1, device_type="cuda")]
    lines = report.table(fp32).splitlines()
    assert "*" not in "\n".join(lines[2:4]) and lines[-1] == report.TF32_NOTE
    bf16 = report.table([_row("merged-bf16", pf=1.2, device_type="cuda", dtype="bfloat16")]).splitlines()
    assert "120.0%*" in bf16[2] and bf16[-1] == report.OVER_MATMUL_NOTE
    assert report.table([_row("merged", pf=0.5)]).splitlines()[-1].startswith("merged ")  # no footnote needed


def test_a_goal_whose_row_was_skipped_says_so_and_rows_never_asked_for_stay_silent():
    records = [_row("merged"), _skipped("torchvision", "failed: no room for this row"),
               _row("two-device"), _skipped("two-device", "infer failed: out of memory")]
    goals = _goals(records)
    goal = goals[("merged vs torchvision", 8)]
    assert (goal["judged"], goal["met"], goal["value"]) == (False, None, None)
    assert goal["reason"] == "torchvision was skipped (failed: no room for this row)"
    assert goals[("two-device vs merged", 8)]["judged"]  # its training row ran; only inference failed
    assert ("tower-parallel (2 procs) vs merged (1 proc)", 8) not in goals  # not asked for: no goal, as before
    line = next(l for l in report.goals_text(list(goals.values())).splitlines() if "merged vs torchvision" in l)
    assert line.endswith("     -  (goal >= 1.00)  not judged: torchvision was skipped (failed: no room for this row)")


def test_a_matmul_goal_without_a_matmul_rate_is_not_judged():
    goal = _goals([_row("merged", pf=0.0)])[("merged vs matrix-multiply rate", 8)]
    assert (goal["judged"], goal["reason"]) == (False, "no matrix-multiply rate was measured")


def test_rows_of_different_batch_sizes_are_never_divided():
    records = [_row("merged", batch=8), _row("torchvision", batch=8), _row("merged", batch=16, ips=20.0)]
    goals = _goals(records)
    assert goals[("merged vs torchvision", 8)]["judged"]
    across = goals[("merged vs torchvision", 16)]
    assert (across["judged"], across["value"]) == (False, None)
    assert across["reason"] == "torchvision was measured at batch 8 only, and a ratio needs one batch size"
