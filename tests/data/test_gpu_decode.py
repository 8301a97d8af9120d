"""The GPU data path (--decode gpu) run on the CPU: the same crops, flips, ten crops and colour noise as the
CPU path bit for bit, the fallbacks for files nvJPEG refuses, dropped files named as corrupt, the share the
workers decode (--cpu-decode-share), and the wiring (default workers, --decode resolution, the benchmark row,
the check script)."""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet2gpu.data import folders as data
from alexnet2gpu.data.device_input import InputSpec
from alexnet2gpu.data.folders import CorruptLog, EpochSampler, FolderDataset, collate, load_image, make_loader
from alexnet2gpu.data.gpu import decode as gpu_decode
from alexnet2gpu.data.gpu.decode import decode_batch, decode_encoded, decode_images, resolve_decode
from alexnet2gpu.data.gpu.loader import DecodedLoader
from alexnet2gpu.data.prepare import prepare
from alexnet2gpu.errors import TrainError
from alexnet2gpu.train.engine import evaluate, train_one_epoch
from tests.helpers import ROOT
from tests.helpers.child_env import child_env

CPU = torch.device("cpu")


def smooth_image(seed: int, width: int = 256, height: int = 256, grey: bool = False) -> Image.Image:
    """Photo-like: a smooth random colour field plus pixel noise (JPEG's worst case is flat colour, not this)."""
    rng = np.random.default_rng(seed)
    field = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    pixels = np.clip(np.asarray(field, dtype=np.float64) + rng.normal(0, 10, (height, width, 3)), 0, 255)
    image = Image.fromarray(pixels.astype(np.uint8))
    return image.convert("L") if grey else image


@pytest.fixture(scope="module")
def jpegs(module_tmp) -> list[tuple[str, int]]:
    folder = module_tmp("jpegs")
    samples = []
    for i in range(6):
        path = folder / f"{i}.jpg"
        smooth_image(i).save(path, quality=90)
        samples.append((str(path), i % 2))
    return samples


def cpu_and_gpu_batches(samples, mode, keys, in_channels=3, crop=224, seed=3):
    """The same (epoch, index) keys through both datasets, collated as the loader does."""
    cpu = FolderDataset(samples, mode, in_channels, seed, crop)
    gpu = FolderDataset(samples, mode, in_channels, seed, crop, decode="gpu")
    return collate([cpu[k] for k in keys]), collate([gpu[k] for k in keys])


def test_pil_and_torchvision_decode_these_jpegs_to_the_same_pixels(jpegs):
    """The premise of the exact comparisons below: both libjpeg builds agree on the test images."""
    for path, _ in jpegs:
        for channels in (1, 3):
            files = [torch.from_numpy(np.fromfile(path, dtype=np.uint8))]
            decoded = gpu_decode.decode_on_device(files, CPU, channels)[0]
            assert np.array_equal(decoded.permute(1, 2, 0).numpy(), load_image(path, channels))


@pytest.mark.parametrize("mode,crop", [("train", 224), ("train", 227), ("center", 224), ("ten", 224)])
def test_gpu_path_crops_equal_the_cpu_path(jpegs, mode, crop):
    keys = [(epoch, i) for epoch in range(3) for i in range(len(jpegs))]
    cpu, gpu = cpu_and_gpu_batches(jpegs, mode, keys, crop=crop)
    assert gpu.images is None and gpu.encoded.dim() == 1 and len(gpu) == len(keys)
    images, corrupt, kept = decode_images(gpu, CPU, 3, mode, crop)
    assert corrupt == [] and kept == list(range(len(keys)))
    assert images.dtype == torch.uint8 and images.is_contiguous() and images.shape == cpu.images.shape
    assert torch.equal(images, cpu.images)
    assert torch.equal(gpu.alphas, cpu.alphas) and torch.equal(gpu.targets, cpu.targets)
    if mode == "train":
        assert set(gpu.crop_flip[:, 2].tolist()) == {0, 1}  # both flips were compared


def test_grey_input_with_one_channel(jpegs, tmp_path):
    grey = tmp_path / "grey.jpg"
    smooth_image(9, grey=True).save(grey, quality=90)  # a one-component JPEG beside the colour ones
    samples = jpegs[:3] + [(str(grey), 0)]
    keys = [(epoch, i) for epoch in range(2) for i in range(len(samples))]
    cpu, gpu = cpu_and_gpu_batches(samples, "train", keys, in_channels=1)
    images, _, _ = decode_images(gpu, CPU, 1, "train", 224)
    assert images.shape == (len(keys), 1, 224, 224) and torch.equal(images, cpu.images)


def test_unreadable_files_are_dropped_with_their_labels_and_named(jpegs, tmp_path):
    garbage, empty = tmp_path / "garbage.jpg", tmp_path / "empty.jpg"
    garbage.write_bytes(b"\xff\xd8\xff not a jpeg at all")
    empty.write_bytes(b"")
    missing = tmp_path / "missing.jpg"
    samples = [jpegs[0], (str(garbage), 1), jpegs[1], (str(empty), 0), (str(missing), 1), jpegs[2]]
    keys = [(0, i) for i in range(len(samples))]
    cpu, gpu = cpu_and_gpu_batches(samples, "train", keys)
    assert gpu.corrupt == [str(empty), str(missing)]  # the workers could not read these at all
    decoded = decode_batch(gpu, CPU)
    assert sorted(decoded.corrupt) == sorted(cpu.corrupt) == sorted(map(str, (garbage, empty, missing)))
    assert len(decoded) == len(cpu) == 3
    for name in ("images", "alphas", "targets"):
        assert torch.equal(getattr(decoded, name), getattr(cpu, name))


def test_files_decoded_in_another_step_give_the_same_batch(jpegs, tmp_path):
    """decode_encoded then decode_batch(decoded=...), the two threads of data/gpu/loader.py, give what one call
    gives: the same crops, labels and dropped files, with a CPU share among them; a decoded list of another
    batch is refused."""
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\xff\xd8\xff not a jpeg at all")
    samples = jpegs + [(str(garbage), 1)]
    keys = [(epoch, i) for epoch in range(2) for i in range(len(samples))]
    batch = collate([FolderDataset(samples, "train", 3, 3, 224, decode="gpu", cpu_share=0.5)[k] for k in keys])
    assert batch.decoded_at  # some crops came from the workers
    decoded = decode_encoded(batch, CPU)
    dropped = [batch.paths[i] for i in batch.encoded_at() if batch.paths[i] == str(garbage)]
    assert len(decoded) == len(batch.files()) and sum(d is None for d in decoded) == len(dropped) > 0
    whole, apart = decode_batch(batch, CPU), decode_batch(batch, CPU, decoded=decoded)
    assert whole.corrupt == apart.corrupt == dropped
    for name in ("images", "alphas", "targets"):
        assert torch.equal(getattr(whole, name), getattr(apart, name))
    with pytest.raises(ValueError, match="decoded images for a batch of"):
        decode_batch(batch, CPU, decoded=decoded[:-1])


def test_a_batch_of_nothing_decodable_is_empty(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"GIF89a but truncated")
    _, gpu = cpu_and_gpu_batches([(str(bad), 0)], "ten", [(0, 0)])
    decoded = decode_batch(gpu, CPU)
    assert len(decoded) == 0 and decoded.images.shape == (0, 10, 3, 224, 224) and decoded.corrupt == [str(bad)]


def test_png_cmyk_and_bmp_go_through_the_fallbacks(jpegs, tmp_path, monkeypatch):
    png, cmyk, bmp = tmp_path / "a.png", tmp_path / "cmyk.jpg", tmp_path / "c.bmp"
    smooth_image(20).save(png)
    smooth_image(21).convert("CMYK").save(cmyk, quality=90)
    smooth_image(22).save(bmp)
    real = gpu_decode.decode_on_device
    refused = []

    def like_nvjpeg(files, device, in_channels):  # nvJPEG refuses CMYK (Adobe) JPEGs; libjpeg would decode them
        if any(b"Adobe" in f.numpy().tobytes() for f in files):
            refused.append(len(files))
            raise RuntimeError("unsupported colour space")
        return real(files, device, in_channels)

    monkeypatch.setattr(gpu_decode, "decode_on_device", like_nvjpeg)
    samples = [jpegs[0], (str(png), 1), (str(cmyk), 0), (str(bmp), 1), jpegs[1]]
    keys = [(1, i) for i in range(len(samples))]
    cpu, gpu = cpu_and_gpu_batches(samples, "train", keys)
    decoded = decode_batch(gpu, CPU)
    assert refused == [5, 3, 1]  # the batch, the half with it, the CMYK file alone: then decoded on the CPU
    assert decoded.corrupt == [] and torch.equal(decoded.images, cpu.images)


def test_unprepared_sizes_are_resized_like_load_image(tmp_path):
    samples = []
    for i, (w, h) in enumerate([(600, 300), (300, 400), (200, 150)]):
        path = tmp_path / f"{w}x{h}.png"  # lossless, so only the resize differs
        smooth_image(30 + i, w, h).save(path)
        samples.append((str(path), 0))
    cpu, gpu = cpu_and_gpu_batches(samples, "center", [(0, i) for i in range(3)])
    images, _, _ = decode_images(gpu, CPU, 3, "center", 224)
    diff = (images.int() - cpu.images.int()).abs()
    assert images.shape == cpu.images.shape and diff.float().mean() < 1.5 and diff.max() < 40


def test_the_loops_see_decoded_batches_and_count_dropped_files(jpegs, tmp_path):
    """train_one_epoch and evaluate through InputSpec.decode get what the CPU path gives them."""
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff broken")
    samples = jpegs + [(str(bad), 1)]
    seen, clocks = {}, []

    def run(decode):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(12, 2))
        inputs = seen.setdefault(decode, [])
        model.register_forward_pre_hook(lambda m, args: inputs.append(args[0].clone()))
        spec = InputSpec(CPU, torch.tensor([120.0, 110.0, 100.0]), "paper")
        corrupt = CorruptLog(5, log=lambda *a: None)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        loader = make_loader(FolderDataset(samples, "train", decode=decode), EpochSampler(len(samples), 1), 3, 0)
        val = make_loader(FolderDataset(samples, "ten", decode=decode), EpochSampler(len(samples), 0, shuffle=False), 2, 0)
        if decode == "gpu":
            lengths = len(loader), len(val)
            loader, val = (DecodedLoader(d, spec.decode, CPU, files=spec.decode_files) for d in (loader, val))
            assert (len(loader), len(val)) == lengths
            clocks.append(loader)
        stats = train_one_epoch(model, optimizer, loader, spec, corrupt=corrupt, total_images=len(samples), desc="t",
                                show=False)
        result = evaluate(model, val, spec, corrupt=corrupt, num_classes=2, show=False)
        return stats.loss, stats.images, result, corrupt.paths

    assert run("gpu") == run("cpu")
    assert len(seen["gpu"]) == len(seen["cpu"]) and all(map(torch.equal, seen["gpu"], seen["cpu"]))
    decoding, cropping = clocks[0].clocks()  # each thread's time, for train.py's note
    assert decoding.making > 0 and decoding.waiting > 0 and cropping.making > 0 and cropping.waiting > 0


def test_an_undecoded_batch_is_refused_by_the_input_spec(jpegs):
    _, gpu = cpu_and_gpu_batches(jpegs, "center", [(0, 0)])
    with pytest.raises(ValueError, match="InputSpec.decode first"):
        InputSpec(CPU, torch.zeros(3))(gpu, train=False)


def test_batches_cross_from_workers_as_one_tensor(jpegs):
    """Two loader workers: each batch's bytes arrive as one tensor (one file descriptor, not one per image)."""
    dataset = FolderDataset(jpegs, "center", decode="gpu")
    batches = list(make_loader(dataset, EpochSampler(len(jpegs), 0, shuffle=False), 3, 2))
    assert [len(b) for b in batches] == [3, 3]
    assert all(isinstance(b.encoded, torch.Tensor) and len(b.files()) == 3 for b in batches)
    last = batches[-1]
    assert last.files()[0].numpy().tobytes() == Path(last.paths[0]).read_bytes()


@pytest.mark.cuda
def test_on_cuda_the_crop_maths_is_the_same_and_batches_pin(jpegs):
    keys = [(epoch, i) for epoch in range(3) for i in range(len(jpegs))]
    _, gpu = cpu_and_gpu_batches(jpegs, "train", keys)
    on_cpu, _, _ = decode_images(gpu, CPU, 3, "train", 224)
    full = torch.stack(gpu_decode.decode_files(gpu.files(), torch.device("cuda"), 3))
    assert torch.equal(gpu_decode.crop_batch(full, gpu.crop_flip, "train", 224).cpu(),
                       gpu_decode.crop_batch(full.cpu(), gpu.crop_flip, "train", 224))
    # nvJPEG's IDCT and chroma upsampling are not libjpeg's: 1.3 to 1.7 grey levels apart on average on an
    # H100 (docs/gpu-decode.md). A wrong crop, flip or colour order would be tens of levels apart.
    assert (decode_images(gpu, "cuda", 3, "train", 224)[0].cpu().int() - on_cpu.int()).abs().float().mean() < 3
    pinned = gpu.pin_memory()
    assert pinned.crop_flip.is_pinned() and pinned.alphas.is_pinned() and pinned.encoded is gpu.encoded


def test_decode_auto_picks_the_gpu_only_for_prepared_data_on_cuda(tmp_path):
    cuda = torch.device("cuda")
    assert resolve_decode("auto", CPU, tmp_path) == "cpu"
    assert resolve_decode("auto", cuda, tmp_path) == "cpu"  # not prepared: PIL's resize is the reference
    (tmp_path / prepare.MARKER).write_text("{}")  # a marker prepare did not write (or a half-written one)
    assert not prepare.is_prepared(tmp_path)
    (tmp_path / prepare.MARKER).write_text(json.dumps({"format": prepare.FORMAT}))
    assert prepare.is_prepared(tmp_path) and resolve_decode("auto", cuda, tmp_path) == "gpu"
    assert resolve_decode("cpu", cuda, tmp_path) == "cpu" and resolve_decode("gpu", cuda, tmp_path) == "gpu"
    with pytest.raises(TrainError, match="--decode gpu needs a CUDA device"):
        resolve_decode("gpu", CPU, tmp_path)


def test_default_workers_leave_one_core_to_training(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert data.default_workers() == 15
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two ranks under torchrun share the cores
    assert data.default_workers() == 7
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert data.default_workers() == 1


def test_train_py_decode_gpu_on_the_cpu_is_one_sentence(tmp_path, capsys):
    from alexnet2gpu.cli import train
    from alexnet2gpu.data.synthetic import ensure_synthetic
    folders = ensure_synthetic(2, 1, 1, cache_dir=tmp_path, log=lambda *a: None)
    code = train.main(["--data", str(folders), "--device", "cpu", "--decode", "gpu", "--workers", "0",
                       "--mean", "120,110,100", "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 1 and "train.py: error: --decode gpu needs a CUDA device" in err and len(err.splitlines()) == 1
    assert train.build_config(train.parser().parse_args([]))[0].decode == "auto"


def test_the_pipeline_row_runs_gpu_decode_on_the_cpu_and_the_runner_skips_it(tmp_path):
    from alexnet2gpu.bench import runner
    from alexnet2gpu.bench.pipeline import measure_input_pipeline
    from alexnet2gpu.cli import train
    from alexnet2gpu.data.synthetic import ensure_synthetic
    folders = ensure_synthetic(2, 3, 1, cache_dir=tmp_path, log=lambda *a: None)
    r = measure_input_pipeline(2, CPU, str(folders), workers=1, max_batches=2, decode="gpu", cpu_share=0.5)
    assert r["seconds_per_batch"] > 0 and r["workers"] == 1 and r["cpu_share"] == 0.5  # a worker decodes some
    assert "input-pipeline-gpu" in runner.ALL_ROWS
    assert runner.Options().cpu_decode_share == train.build_config(train.parser().parse_args([]))[0].cpu_decode_share
    skipped = runner._pipeline_row(runner.Options(), CPU, 2, decode="gpu")
    assert skipped["mode"] == "skipped" and "needs a CUDA device" in skipped["note"]


@pytest.mark.slow
def test_the_check_script_runs_its_cpu_parts(tmp_path):
    env = child_env()
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_decode_check.py"), "--device", "cpu",
                           "--images", "64", "--batch", "16", "--workers", "1", "--repeats", "1", "--shares", "0,auto",
                           "--out", str(tmp_path)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for line in ("batch decode alone", "64 images a call", "two threads", "two processes together", "decode_images",
                 "crop + flip of decoded files",
                 "input pipeline, decode=gpu, share 0.00",
                 "(auto)", "input pipeline, decode=cpu", "max abs pixel difference", "CPU share 0.5"):
        assert line in proc.stdout


# ---------------------------------------------------------------- the CPU share (--cpu-decode-share)

def share_batch(samples, mode, keys, share, seed=3):
    return collate([FolderDataset(samples, mode, 3, seed, 224, decode="gpu", cpu_share=share)[k] for k in keys])


@pytest.mark.parametrize("mode", ["train", "center", "ten"])
def test_a_cpu_share_decodes_the_same_batch_bit_for_bit(jpegs, mode, monkeypatch):
    """Shares 0.5 and 1 give share 0's batch: the workers' crops land at their positions, labels with them."""
    samples = [(path, i) for i, (path, _) in enumerate(jpegs)]  # label = index: a misplaced image shows
    keys = [(epoch, i) for epoch in range(2) for i in (5, 0, 3, 1, 4, 2)]
    reference = decode_batch(share_batch(samples, mode, keys, 0.0), CPU)
    assert share_batch(samples, mode, keys, 0.0).decoded is None  # share 0: every image goes to the device
    for share in (0.5, 1.0):
        batch = share_batch(samples, mode, keys, share)
        here = [n for n, (_, i) in enumerate(keys) if data.decoded_in_worker(i, share)]
        assert batch.decoded_at == here and len(batch.decoded) == len(here) and len(batch.files()) == len(keys) - len(here)
        assert 0 < len(here) < len(keys) if share == 0.5 else len(here) == len(keys)  # 0.5: both parts compared
        if share == 1.0:  # no device decode at all
            monkeypatch.setattr(gpu_decode, "decode_files", lambda *a: pytest.fail("decoded on the device"))
        decoded = decode_batch(batch, CPU)
        assert decoded.images.is_contiguous() and torch.equal(decoded.images, reference.images)
        assert torch.equal(decoded.targets, reference.targets) and decoded.targets.tolist() == [i for _, i in keys]
        assert torch.equal(decoded.alphas, reference.alphas)


@pytest.mark.cuda
def test_on_cuda_the_workers_crops_land_at_their_positions_exactly(jpegs):
    samples = [(path, i) for i, (path, _) in enumerate(jpegs)]
    keys = [(epoch, i) for epoch in range(3) for i in range(len(samples))]
    batch = share_batch(samples, "train", keys, 0.5).pin_memory()
    assert batch.decoded.is_pinned() and batch.encoded.numel() > 0
    on_cuda, on_cpu = decode_batch(batch, "cuda"), decode_batch(share_batch(samples, "train", keys, 0.5), CPU)
    here = batch.decoded_at
    assert torch.equal(on_cuda.images[here].cpu(), on_cpu.images[here])  # libjpeg's pixels, from the workers
    assert (on_cuda.images.cpu().int() - on_cpu.images.int()).abs().float().mean() < 3  # nvJPEG's elsewhere
    assert on_cuda.targets.tolist() == [i for _, i in keys]


@pytest.mark.cuda
def test_on_cuda_the_two_threads_hand_over_the_batches_one_call_makes(jpegs):
    """decoded_loader's decoding and crop threads, each on a CUDA stream of its own, deliver to this stream
    exactly the batches decode_batch makes in one call (nothing read before it was written)."""
    samples = [(path, i) for i, (path, _) in enumerate(jpegs)]
    batches = [share_batch(samples, "train", [(epoch, i) for i in range(len(samples))], 0.5).pin_memory()
               for epoch in range(6)]
    spec = InputSpec(torch.device("cuda"), torch.zeros(3))
    threaded = list(DecodedLoader(batches, spec.decode, "cuda", files=spec.decode_files))
    assert len(threaded) == len(batches)
    for got, batch in zip(threaded, batches):
        want = decode_batch(batch, "cuda")
        assert torch.equal(got.images, want.images) and torch.equal(got.targets, want.targets)


def test_unreadable_files_in_either_share_are_dropped_and_named(jpegs, tmp_path):
    worker_bad, device_bad = tmp_path / "worker-bad.jpg", tmp_path / "device-bad.jpg"
    worker_bad.write_bytes(b"\xff\xd8\xff not a jpeg")
    device_bad.write_bytes(b"GIF89a truncated")
    assert [data.decoded_in_worker(i, 0.5) for i in range(6)] == [True, False, True, False, True, True]
    samples = [jpegs[0], (str(device_bad), 1), (jpegs[1][0], 2), (jpegs[2][0], 3), (str(worker_bad), 4), (jpegs[3][0], 5)]
    keys = [(1, i) for i in range(len(samples))]
    batch = share_batch(samples, "train", keys, 0.5)
    assert batch.corrupt == [str(worker_bad)] and "torchvision" in batch.reasons[str(worker_bad)]
    decoded = decode_batch(batch, CPU)
    cpu = collate([FolderDataset(samples, "train", 3, 3, 224)[k] for k in keys])  # PIL: the same pixels here
    assert sorted(decoded.corrupt) == sorted(cpu.corrupt) == sorted([str(worker_bad), str(device_bad)])
    assert decoded.targets.tolist() == [0, 2, 3, 5]
    for name in ("images", "alphas", "targets"):
        assert torch.equal(getattr(decoded, name), getattr(cpu, name))


def test_the_auto_share_balances_the_decode_rates_and_spreads_evenly():
    c, g = gpu_decode.WORKER_DECODE_RATE, gpu_decode.GPU_DECODE_RATE
    assert gpu_decode.resolve_cpu_share("auto", 15) == pytest.approx(15 * c / (15 * c + g))
    assert gpu_decode.resolve_cpu_share("auto", 0) == 0.0  # no worker processes: all on the device
    assert gpu_decode.resolve_cpu_share(0.3, 15) == 0.3 and gpu_decode.resolve_cpu_share("1", 2) == 1.0
    for bad in ("half", 1.5, -0.1, float("nan"), True):
        with pytest.raises(TrainError, match=r"^--cpu-decode-share .*: pass auto or .* a number from 0 to 1\.$"):
            gpu_decode.resolve_cpu_share(bad, 4)
    for share in (0.3, 0.45):  # any 100 consecutive samples hold the share to within 3 (a validation batch)
        counts = [sum(data.decoded_in_worker(i, share) for i in range(s, s + 100)) for s in range(0, 5000, 37)]
        assert all(abs(n - 100 * share) <= 3 for n in counts)


def test_cpu_decode_share_is_a_train_py_and_bench_flag(tmp_path, capsys):
    from alexnet2gpu.cli import bench, train
    from alexnet2gpu.distributed.world import Context
    from alexnet2gpu.train.config import Config
    from alexnet2gpu.train.loaders import run_loaders
    from alexnet2gpu.train.trainer import Run
    code = train.main(["--data", str(tmp_path), "--cpu-decode-share", "most", "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("train.py: error: --cpu-decode-share 'most': pass auto") and err.count("\n") == 1
    assert train.build_config(train.parser().parse_args(["--cpu-decode-share", "0.25"]))[0].cpu_decode_share == 0.25
    assert bench.main(["--device", "cpu", "--rows", "input-pipeline-gpu", "--cpu-decode-share", "2"]) == 2
    assert "bench.py: --cpu-decode-share '2': pass auto" in capsys.readouterr().err
    note = Run.gpu_decode_note(SimpleNamespace(decode="gpu", cfg=Config(workers=2, cpu_decode_share=0.25),
                                                  record={"cpu_decode_share": 0.25}))
    assert note == (" with nvJPEG (25% of the images decoded by the loader workers, --cpu-decode-share "
                    "0.25)")  # the banner's
    splits = data.Splits(["a"], [("x.jpg", 0)], [("y.jpg", 0)])
    cfg = Config(workers=2)
    for decode, share in (("gpu", gpu_decode.resolve_cpu_share("auto", 2)), ("cpu", 0.0)):
        loaders = run_loaders(cfg, splits, Context(), decode=decode)
        assert loaders.train.dataset.cpu_share == loaders.val.dataset.cpu_share == share
