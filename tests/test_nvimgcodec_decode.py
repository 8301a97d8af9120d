"""--gpu-decoder nvimgcodec run on the CPU, where nvImageCodec decodes with libjpeg-turbo: the GPU data path's
crops equal the CPU path's bit for bit, files it cannot read go to the CPU fallbacks or are dropped and named,
the flag reaches the decoder from train.py and bench.py, and a missing extra is one sentence. On CUDA: its
pixels against torchvision's nvJPEG, and the crop maths on its device images."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from alexnet2gpu import gpu_decode, nvimgcodec_decode
from alexnet2gpu.engine import InputSpec
from alexnet2gpu.errors import TrainError
from alexnet2gpu.gpu_decode import decode_batch, decode_images

from test_gpu_decode import cpu_and_gpu_batches, jpegs, smooth_image  # noqa: F401 - jpegs is a fixture
from child_env import child_env

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


@pytest.mark.parametrize("mode,in_channels", [("train", 3), ("center", 3), ("ten", 3), ("train", 1)])
def test_crops_equal_the_cpu_path_bit_for_bit(jpegs, tmp_path, mode, in_channels):
    samples = list(jpegs)
    if in_channels == 1:
        smooth_image(9, grey=True).save(tmp_path / "grey.jpg", quality=90)  # a one-component JPEG too
        samples.append((str(tmp_path / "grey.jpg"), 0))
    keys = [(epoch, i) for epoch in range(2) for i in range(len(samples))]
    cpu, gpu = cpu_and_gpu_batches(samples, mode, keys, in_channels=in_channels)
    images, corrupt, kept = decode_images(gpu, CPU, in_channels, mode, 224, "nvimgcodec")
    assert corrupt == [] and kept == list(range(len(keys)))
    assert images.is_contiguous() and images.shape == cpu.images.shape and torch.equal(images, cpu.images)


def test_its_images_are_views_of_interleaved_pixels(jpegs):
    files = [torch.from_numpy(np.fromfile(p, dtype=np.uint8)) for p, _ in jpegs[:2]]
    images = nvimgcodec_decode.decode(files, CPU, 3)
    reference = gpu_decode.decode_on_device(files, CPU, 3)
    for image, expected in zip(images, reference):
        assert image.shape == (3, 256, 256) and image.stride() == (1, 768, 3)  # C x H x W over H x W x C memory
        assert torch.equal(image, expected)


def test_files_it_refuses_go_to_the_cpu_decoders_and_unreadable_ones_are_dropped(jpegs, tmp_path, monkeypatch):
    cmyk, garbage = tmp_path / "cmyk.jpg", tmp_path / "garbage.jpg"
    smooth_image(21).convert("CMYK").save(cmyk, quality=90)
    garbage.write_bytes(b"\xff\xd8\xff not a jpeg at all")
    real, refused = nvimgcodec_decode.decode, []

    def like_the_gpu(files, device, in_channels, using=None):  # nvJPEG refuses CMYK; libjpeg-turbo would not
        images = real(files, device, in_channels, using)
        adobe = [b"Adobe" in f.numpy().tobytes() for f in files]
        refused.extend(i for i, a in enumerate(adobe) if a)
        return [None if a else image for a, image in zip(adobe, images)]

    monkeypatch.setattr(nvimgcodec_decode, "decode", like_the_gpu)
    samples = [jpegs[0], (str(cmyk), 1), (str(garbage), 0), jpegs[1]]
    cpu, gpu = cpu_and_gpu_batches(samples, "train", [(1, i) for i in range(len(samples))])
    decoded = decode_batch(gpu, CPU, "nvimgcodec")
    assert refused == [1]  # one call for the whole batch; the CMYK file then went to the CPU decoders
    assert decoded.corrupt == cpu.corrupt == [str(garbage)] and len(decoded) == 3
    for name in ("images", "alphas", "targets"):
        assert torch.equal(getattr(decoded, name), getattr(cpu, name))


def test_a_call_that_raises_is_decoded_the_torchvision_way(jpegs, monkeypatch):
    def raising(*args, **kwargs):
        raise RuntimeError("nvImageCodec failed")

    monkeypatch.setattr(nvimgcodec_decode, "decode", raising)
    cpu, gpu = cpu_and_gpu_batches(jpegs, "train", [(0, i) for i in range(len(jpegs))])
    with pytest.warns(RuntimeWarning, match=r"nvImageCodec failed on a batch \(RuntimeError: nvImageCodec failed\); "
                      "decoding it with torchvision instead."):
        decoded = decode_batch(gpu, CPU, "nvimgcodec")
    assert decoded.corrupt == [] and torch.equal(decoded.images, cpu.images)


def test_the_input_spec_decodes_with_its_decoder(jpegs, monkeypatch):
    cpu, gpu = cpu_and_gpu_batches(jpegs, "center", [(0, i) for i in range(3)])
    calls = []
    real = nvimgcodec_decode.decode
    monkeypatch.setattr(nvimgcodec_decode, "decode", lambda *a, **k: calls.append(len(a[0])) or real(*a, **k))
    spec = InputSpec(CPU, torch.zeros(3), gpu_decoder="nvimgcodec")
    assert torch.equal(spec.decode(gpu).images, cpu.images) and calls == [3]
    assert InputSpec(CPU, torch.zeros(3)).gpu_decoder == "torchvision"  # the default
    with pytest.raises(ValueError, match="unknown decoder 'pil': choose torchvision or nvimgcodec"):
        decode_images(gpu, CPU, 3, "center", 224, "pil")


def test_a_missing_extra_is_one_sentence_naming_it(jpegs, monkeypatch):
    monkeypatch.setitem(sys.modules, "nvidia.nvimgcodec", None)  # what an absent package looks like to import
    with pytest.raises(TrainError) as error:
        nvimgcodec_decode.module()
    assert str(error.value) == ("--gpu-decoder nvimgcodec needs the nvidia.nvimgcodec package, which is not "
                                "installed: pip install 'alexnet2gpu[nvimgcodec]'.")
    _, gpu = cpu_and_gpu_batches(jpegs, "center", [(0, 0)])
    with pytest.raises(TrainError, match=r"alexnet2gpu\[nvimgcodec\]"):  # not the torchvision fallback
        decode_batch(gpu, CPU, "nvimgcodec")


def test_host_threads_are_the_ranks_cores(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert nvimgcodec_decode.host_threads() == 16
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert nvimgcodec_decode.host_threads() == 8


def test_gpu_decoder_is_a_train_py_and_bench_flag(tmp_path, capsys):
    from alexnet2gpu.bench import runner
    from alexnet2gpu.bench.pipeline import measure_input_pipeline
    from alexnet2gpu.cli import bench, train
    from alexnet2gpu.config import EVALUATION, PLACEMENT, RESUMABLE
    from alexnet2gpu.synthetic import ensure_synthetic
    cfg = train.build_config(train.parser().parse_args(["--gpu-decoder", "nvimgcodec"]))[0]
    assert cfg.gpu_decoder == "nvimgcodec" and {"gpu_decoder"} <= set(RESUMABLE) & set(EVALUATION) & set(PLACEMENT)
    with pytest.raises(SystemExit):
        train.parser().parse_args(["--gpu-decoder", "pil"])
    assert "invalid choice: 'pil'" in capsys.readouterr().err
    assert bench.options(bench.parse_args(["--gpu-decoder", "nvimgcodec"])).gpu_decoder == "nvimgcodec"
    assert bench.main(["--rows", "input-pipeline-gpu", "--gpu-decoder", "pil"]) == 2
    assert "--gpu-decoder 'pil': choose torchvision or nvimgcodec." in capsys.readouterr().err
    folders = ensure_synthetic(2, 3, 1, cache_dir=tmp_path, log=lambda *a: None)
    r = measure_input_pipeline(2, CPU, str(folders), workers=1, max_batches=2, decode="gpu", cpu_share=0.0,
                               decoder="nvimgcodec")
    assert r["seconds_per_batch"] > 0 and r["cpu_share"] == 0.0
    assert runner.Options().gpu_decoder == "torchvision"  # train.py's default


@pytest.mark.slow
def test_the_check_script_runs_its_cpu_parts(tmp_path):
    env = child_env()
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "nvimgcodec_check.py"), "--device", "cpu",
                           "--images", "64", "--batch", "16", "--workers", "1", "--repeats", "1",
                           "--out", str(tmp_path)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for line in ("(a) torchvision batch decode alone", "nvimgcodec batch decode alone, 1 host threads",
                 "decode_images with nvimgcodec", "input pipeline, torchvision, share", "input pipeline, nvimgcodec, "
                 "share 0.00", "nvimgcodec vs PIL crops: max abs pixel difference 0, mean 0.000", "garbage.jpg dropped"):
        assert line in proc.stdout
    assert (tmp_path / "nvimgcodec_check.json").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_its_pixels_are_nvjpegs_and_the_crops_cut_them_right(jpegs):
    cuda = torch.device("cuda")
    keys = [(epoch, i) for epoch in range(3) for i in range(len(jpegs))]
    cpu, gpu = cpu_and_gpu_batches(jpegs, "train", keys)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):  # as the decoding thread runs it: on a stream of its own
        full = torch.stack(gpu_decode.decode_files(gpu.files(), cuda, 3, "nvimgcodec"))
        crops = decode_images(gpu, cuda, 3, "train", 224, "nvimgcodec")[0]
    side.synchronize()
    assert full.shape == (len(keys), 3, 256, 256) and full.device.type == "cuda"
    assert torch.equal(gpu_decode.crop_batch(full, gpu.crop_flip, "train", 224).cpu(),
                       gpu_decode.crop_batch(full.cpu(), gpu.crop_flip, "train", 224))
    nvjpeg = torch.stack(gpu_decode.decode_files(gpu.files(), cuda, 3))
    # The hardware decoder and nvJPEG may round differently; both are about 1.7 grey levels from libjpeg.
    assert (full.int() - nvjpeg.int()).abs().float().mean() < 3
    assert (crops.cpu().int() - cpu.images.int()).abs().float().mean() < 3
