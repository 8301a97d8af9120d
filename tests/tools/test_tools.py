"""The GPU tools (tools/*.py) on a machine without CUDA: each imports what it uses from the package and stops
with one sentence. GPU time is scarce; an import broken by a move must show up here, not on the GPU box."""
import importlib.util
import os
import re
import subprocess
import sys

import pytest
import torch

from tests.helpers import ROOT
from tests.helpers.child_env import child_env


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path of the tools")
@pytest.mark.parametrize("tool", ["profile_step.py", "lrn_microbench.py", "conv_microbench.py",
                                  "pool_microbench.py"])
def test_gpu_tools_import_and_say_they_need_cuda(tool):
    env = child_env()
    done = subprocess.run([sys.executable, str(ROOT / "tools" / tool)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip() == f"{tool}: needs a CUDA device"


def test_profile_step_reports_host_time_and_python_hotspots(tmp_path, capsys, monkeypatch):
    """The host part of tools/profile_step.py, which a GPU session reads to tell a step bound by its host (run in
    this process: the tool's import is checked above)."""
    spec = importlib.util.spec_from_file_location("profile_step", ROOT / "tools" / "profile_step.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)  # the tool sets it
    assert tool.main(["--device", "cpu", "--row", "merged", "--batch-size", "2", "--steps", "1", "--python-top", "5",
                      "--ops-top", "4", "--out", str(tmp_path)]) == 0
    lines = (tmp_path / "profile-merged.txt").read_text().splitlines()
    assert capsys.readouterr().out.splitlines() == lines
    assert lines[0].startswith("merged, batch 2, CPU, torch ")
    assert lines[1].startswith("host: ") and "ms to launch a step begun idle" in lines[1]
    phases = re.fullmatch(r"host by phase: forward ([\d.]+) ms, loss \+ backward ([\d.]+) ms, optimiser ([\d.]+) ms",
                          lines[2])
    assert phases and all(float(v) > 0 for v in phases.groups())
    assert lines[3].startswith("host ops (torch.profiler, 1 steps, own host time a step; all ops ")
    ops = [line.split() for line in lines[4:8]]
    assert all(op[1] == "us" and op[2].startswith("x") for op in ops)
    assert all(op[3].startswith("aten::") or "#" in op[3] for op in ops)  # ATen ops, or the optimiser's labels
    assert lines[8] == "python (cProfile, 1 steps, by own time):"
    assert lines[9].split() == ["ncalls", "tottime", "percall", "cumtime", "percall", "filename:lineno(function)"]
    assert len(lines) == 10 + 5


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CPU tool: it forces the interpreted Triton paths")
def test_step_ops_counts_a_steps_aten_ops_with_the_cuda_set_up(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the tool sets it too: restored after the test
    spec = importlib.util.spec_from_file_location("step_ops", ROOT / "tools" / "step_ops.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tiny = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 6 * 6, 3))
    ops = tool.count(tiny, 2, size=8, classes=3)
    assert ops["aten.convolution"] == ops["aten.convolution_backward"] == ops["aten.addmm"] == 1
    import triton.runtime.interpreter as interpreter
    monkeypatch.setattr(interpreter.InterpretedFunction, "run", lambda self, *a, **k: None)  # as tool.no_launches
    ops = tool.count(tool.on_cuda("merged", device="cpu"), 1)
    # conv1's and conv2's ReLU + LRN + max-pool ran as the fused Triton steps: at most conv5's pool is ATen's
    assert ops["aten.convolution"] == 5 and ops["aten.max_pool2d_with_indices"] <= 1


def test_lrn_microbench_times_the_fused_pool_kernels_against_the_pairs(monkeypatch):
    """The ReLU + LRN + max-pool line of tools/lrn_microbench.py, on small maps with a stand-in timer: it runs
    both backwards and, interpreted, finds them equal."""
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    spec = importlib.util.spec_from_file_location("lrn_microbench", ROOT / "tools" / "lrn_microbench.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    from alexnet2gpu.ops.kernels import lrn as lrn_kernels
    device = "cuda" if torch.cuda.is_available() else "cpu"  # the kernels compiled, or interpreted (conftest.py)
    z = torch.randn(2, 8, 7, 7, device=device).contiguous(memory_format=torch.channels_last)
    timer = lambda run: run() is None or 0.002
    exact = device == "cpu"  # compiled, the kernels may round differently from the pair (tests/ops/test_lrn_pool.py)
    line = tool.pool_line("lrn1", lrn_kernels, z, timer, quick=True)
    assert re.fullmatch(r"lrn1  \+pool backward: apart 2\.0 us; fused 2\.0 us at 1024 x 4 warps "
                        r"\(rel\.diff (0\.0e\+00|\d\.\de-\d\d)\);", line), line
    assert line.endswith("(rel.diff 0.0e+00);") or not exact


def test_the_gpu_check_script_parses():
    assert subprocess.run(["bash", "-n", str(ROOT / "tools" / "gpu_check.sh")]).returncode == 0


@pytest.mark.slow
def test_the_end_to_end_check_prepares_trains_and_reports(tmp_path):
    """tools/e2e_check.py on a CPU at toy sizes: sources made, prepared (the marker written), train.py run on
    the prepared folder, and its images/s read back from metrics.csv."""
    env = child_env()
    out = tmp_path / "e2e"
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "e2e_check.py"), "--out", str(out), "--device", "cpu",
                           "--batch-size", "4", "--steps", "2", "--images", "16", "--distinct", "8", "--workers", "0",
                           "--epoch-copies", "2"],  # each prepared training image twice in an epoch
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "prepared" / "alexnet2gpu_prepared.json").is_file()
    lines = done.stdout.splitlines()
    assert lines[0].startswith("sources: 32 500x375 JPEGs") and lines[1].startswith("prepare: ")
    assert lines[2].startswith("train.py --decode auto, batch 4, 2 steps on cpu, epochs of 32 "
                               "images: ")
    assert len(list((out / "prepared" / "train").rglob("*.jpg"))) == 32
    again = subprocess.run([sys.executable, str(ROOT / "tools" / "e2e_check.py"), "--out", str(out), "--device", "cpu"],
                           env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "is not empty" in again.stderr


def test_child_processes_keep_the_callers_python_path(monkeypatch):
    """The repository first, then what the caller had (an extra unpacked on a machine without pip), once each."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/opt/extras", str(ROOT), "/opt/extras"]))
    env = child_env(OMP_NUM_THREADS="1")
    assert env["PYTHONPATH"] == os.pathsep.join([str(ROOT), "/opt/extras"]) and env["OMP_NUM_THREADS"] == "1"
    monkeypatch.delenv("PYTHONPATH")
    assert child_env()["PYTHONPATH"] == str(ROOT)
