"""The paper's data pipeline: folders, 256x256, crops within bounds, flips, ten crops, mean on 0..255,
PCA colour noise, deterministic augmentation, sharding over tower pairs, corrupt images, the built-in set."""
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet2gpu.data import folders as data
from alexnet2gpu.data.batch import Batch
from alexnet2gpu.data.device_input import InputSpec, to_model_input
from alexnet2gpu.data.folders import (CorruptLog, EpochSampler, FolderDataset, augmentation, collate, dataset_mean,
                                      load_image, open_folders, ten_crops)
from alexnet2gpu.data.prepare.plan import split_pairs
from alexnet2gpu.data.prepare.prepare import prepare
from alexnet2gpu.data.synthetic import ensure_synthetic, make_image
from alexnet2gpu.errors import PrepareError, TrainError
from alexnet2gpu.train.engine import evaluate


@pytest.fixture(scope="module")
def folders(module_tmp):
    return ensure_synthetic(3, 2, 1, cache_dir=module_tmp("cache"), log=lambda *a: None)


def test_load_image_rescales_shorter_side_and_takes_the_centre(tmp_path):
    a = np.zeros((300, 600, 3), np.uint8)
    a[:, 150:450] = 200  # a centred band 300 wide: 256 wide after the resize
    Image.fromarray(a).save(tmp_path / "wide.png")
    out = load_image(str(tmp_path / "wide.png"), 3)
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8
    assert out[:, 2:-2].min() > 190  # the centre crop is the band: shorter side 300 -> 256, width 600 -> 512
    assert load_image(str(tmp_path / "wide.png"), 1).shape == (256, 256, 1)


def test_training_crops_stay_inside_and_flip_half_the_time():
    offsets, flips = [], []
    for i in range(400):
        ox, oy, flip, alphas = augmentation(seed=1, epoch=2, index=i, crop=224)
        offsets += [ox, oy]
        flips.append(flip)
        assert alphas.shape == (3,)
    assert min(offsets) == 0 and max(offsets) == 32  # uniform over 0..32 (paper: 224 of 256)
    assert 0.4 < np.mean(flips) < 0.6
    assert max(augmentation(0, 0, i, 227)[0] for i in range(200)) == 29  # caffe's 227 crops: 0..29


def test_augmentation_is_a_function_of_seed_epoch_index(folders):
    splits = open_folders(folders, None)
    a = FolderDataset(splits.train, "train", seed=5)
    b = FolderDataset(splits.train, "train", seed=5)
    (x1, al1, y1), _, _ = a[(3, 4)]
    (x2, al2, y2), _, _ = b[(3, 4)]
    assert torch.equal(x1, x2) and torch.equal(al1, al2) and y1 == y2
    assert x1.shape == (3, 224, 224) and x1.dtype == torch.uint8
    assert any(not torch.equal(x1, a[(e, 4)][0][0]) for e in range(4, 8))  # another epoch, another crop


def test_ten_crops_are_corners_centre_and_mirrors():
    a = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    crops = ten_crops(a, 224)
    assert crops.shape == (10, 224, 224, 3)
    expect = [a[:224, :224], a[:224, 32:], a[32:, :224], a[32:, 32:], a[16:240, 16:240]]
    for i, e in enumerate(expect):
        np.testing.assert_array_equal(crops[i], e)
        np.testing.assert_array_equal(crops[5 + i], e[:, ::-1])


@pytest.mark.parametrize("mode", ["train", "ten"])
def test_a_batch_is_the_crops_stacked_in_channels_last_memory(folders, mode, monkeypatch):
    """collate's batch equals the crops stacked as they are, in pixels-last memory (one plain copy of the crops,
    which the loader cuts from H x W x C pixels); in a worker it is written straight into shared memory."""
    ds = FolderDataset(open_folders(folders, None).train, mode)
    items = [ds[(1, i)] for i in range(3)]
    crops = torch.stack([item[0][0] for item in items])
    batch = collate(items)
    assert torch.equal(batch.images, crops) and batch.images.dtype == torch.uint8
    assert batch.images.movedim(-3, -1).is_contiguous() and not batch.images.is_shared()
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: object())  # as inside a loader worker
    shared = collate(items).images
    assert shared.is_shared() and torch.equal(shared, crops)


def test_mean_subtraction_on_the_raw_scale_and_pca_noise():
    images = torch.full((2, 3, 4, 4), 200, dtype=torch.uint8)
    mean = torch.tensor([100.0, 110.0, 120.0])
    x = to_model_input(images, torch.zeros(2, 3), mean, "paper", "cpu")
    assert torch.equal(x[0, :, 0, 0], torch.tensor([100.0, 90.0, 80.0]))  # 0..255, no division by std
    alphas = torch.tensor([[1.0, 0, 0], [0, 0, 0]])
    shift = to_model_input(images, alphas, mean, "paper", "cpu") - x
    strength, vectors = data.PCA_NOISE["paper"]
    torch.testing.assert_close(shift[0, :, 1, 2], strength[0] * vectors[:, 0])  # alpha_1 lambda_1 p_1 on every pixel
    assert (shift[1] == 0).all()
    assert to_model_input(images, alphas, mean, None, "cpu").equal(x)  # evaluation: no noise


@pytest.mark.parametrize("kind", ["paper", "original"])
def test_pca_noise_statistics(kind):
    """alpha ~ N(0, 0.1^2): the shift's projection on eigenvector i has std 0.1 * s_i."""
    n = 4000
    alphas = torch.from_numpy(np.stack([augmentation(0, 0, i, 224)[3] for i in range(n)]))
    shifts = to_model_input(torch.zeros(n, 3, 1, 1, dtype=torch.uint8), alphas, torch.zeros(3), kind, "cpu")
    strength, vectors = data.PCA_NOISE[kind]
    proj = shifts.view(n, 3) @ vectors  # back onto the eigenvectors (orthonormal columns)
    torch.testing.assert_close(proj.std(0), 0.1 * strength, rtol=0.06, atol=0)
    assert proj.mean(0).abs().max() < 0.1 * strength.max() * 0.1


def test_ten_crop_evaluation_averages_probabilities_not_logits():
    """Crop logits chosen so averaging logits picks class 0 but averaging softmax picks class 1."""
    logits = torch.zeros(10, 2)
    logits[0] = torch.tensor([40.0, 0.0])  # one crop very sure of class 0
    logits[1:] = torch.tensor([0.0, 1.0])  # nine crops mildly for class 1
    assert logits.mean(0).argmax() == 0 and logits.softmax(1).mean(0).argmax() == 1

    class Fixed(torch.nn.Module):
        def forward(self, x):
            assert x.shape == (10, 3, 2, 2)
            return logits

    batch = Batch(torch.zeros(1, 10, 3, 2, 2, dtype=torch.uint8), torch.zeros(1, 3), torch.tensor([1]), [])
    spec = InputSpec(torch.device("cpu"), torch.zeros(3))
    out = evaluate(Fixed(), [batch], spec, corrupt=CorruptLog(0), num_classes=2, show=False)
    assert out["top1_error"] == 0.0
    assert out["loss"] == pytest.approx(-float(logits.softmax(1).mean(0)[1].log()))


def test_pairs_see_disjoint_shards_covering_the_epoch():
    shards = [EpochSampler(10, epoch=3, seed=1, pair=p, num_pairs=3).indices() for p in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]  # padded to a multiple of the pairs: equal step counts
    assert sorted(set(sum(shards, []))) == list(range(10))
    assert shards[0] == EpochSampler(10, epoch=3, seed=1, pair=0, num_pairs=3).indices()  # both ranks of a pair
    assert shards[0] != EpochSampler(10, epoch=4, seed=1, pair=0, num_pairs=3).indices()
    assert list(EpochSampler(5, 0, shuffle=False)) == [(0, i) for i in range(5)]


def test_corrupt_images_are_skipped_counted_and_stop_past_the_limit(tmp_path, folders):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not a jpeg")
    splits = open_folders(folders, None)
    ds = FolderDataset(splits.train[:2] + [(str(bad), 0)], "center")
    batch = collate([ds[i] for i in range(3)])
    assert len(batch) == 2 and batch.corrupt == [str(bad)]
    logged = []
    log = CorruptLog(limit=1, log=logged.append)
    log.add(batch.corrupt)
    log.add(batch.corrupt)  # the same file in a later epoch counts once
    assert len(logged) == 1 and str(bad) in logged[0]
    with pytest.raises(TrainError, match="more than --max-corrupt 1"):
        log.add([str(tmp_path / "other.jpg")])


def test_folder_mistakes_get_one_clear_sentence(tmp_path, folders):
    with pytest.raises(TrainError, match="does not exist"):
        open_folders(tmp_path / "nowhere", None)
    (tmp_path / "empty" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "val").mkdir()
    with pytest.raises(TrainError, match="no class folders"):
        open_folders(tmp_path / "empty", None)
    with pytest.raises(TrainError, match="--num-classes is 7 but .* has 3 class folders"):
        open_folders(folders, 7)
    odd = tmp_path / "odd"
    for split, names in (("train", ["a", "b"]), ("val", ["a", "c"])):
        for n in names:
            (odd / split / n).mkdir(parents=True)
            make_image(0, 1, split, 0).save(odd / split / n / "x.jpg")
    with pytest.raises(TrainError, match="different classes.*only in train: \\['b'\\], only in val: \\['c'\\]"):
        open_folders(odd, None)


def test_mean_is_computed_once_and_cached_beside_the_data(folders, monkeypatch):
    splits = open_folders(folders, None)
    mean = dataset_mean(folders, splits.train, 3, 10000, 0, CorruptLog(0), log=lambda *a: None)
    stack = np.stack([load_image(p, 3) for p, _ in splits.train]).astype(np.float64)
    np.testing.assert_allclose(mean, stack.mean(axis=(0, 1, 2)), rtol=1e-9)
    assert json.loads((folders / data.MEAN_FILE).read_text())["mean"] == mean
    monkeypatch.setattr(data, "make_loader", lambda *a, **k: pytest.fail("recomputed the cached mean"))
    assert dataset_mean(folders, splits.train, 3, 10000, 0, CorruptLog(0), log=lambda *a: None) == mean


def test_the_built_in_set_is_deterministic_and_reused(tmp_path):
    assert np.array_equal(np.asarray(make_image(2, 10, "train", 7)), np.asarray(make_image(2, 10, "train", 7)))
    assert not np.array_equal(np.asarray(make_image(2, 10, "train", 7)), np.asarray(make_image(2, 10, "val", 7)))
    root = ensure_synthetic(2, 3, 1, cache_dir=tmp_path, log=lambda *a: None)
    assert sorted(p.name for p in (root / "train").iterdir()) == ["00_disc", "01_square"]
    assert len(list((root / "train").rglob("*.jpg"))) == 6 and len(list((root / "val").rglob("*.jpg"))) == 2
    stamp = (root / "train" / "00_disc").stat().st_mtime_ns
    logs = []
    assert ensure_synthetic(2, 3, 1, cache_dir=tmp_path, log=logs.append) == root and not logs
    assert (root / "train" / "00_disc").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="1 to 10 classes"):
        ensure_synthetic(11, 1, 1, cache_dir=tmp_path)


def test_a_link_loop_lists_each_file_once_and_is_named(tmp_path, folders):
    data = tmp_path / "data"
    shutil.copytree(folders, data)
    cls = data / "train" / "00_disc"
    before = open_folders(data, None, warn=lambda line: pytest.fail(line))
    (cls / "up").symlink_to("..", target_is_directory=True)  # back up the tree: a loop
    (cls / "again").symlink_to(".", target_is_directory=True)  # the class folder itself
    warnings = []
    after = open_folders(data, None, warn=warnings.append)
    assert after.train == before.train and after.val == before.val
    assert len(warnings) == 2
    assert any(f"skipped {cls / 'up'}: a link back up its own tree" in w for w in warnings)
    assert any(f"skipped {cls / 'again'}: a link to a folder already listed" in w for w in warnings)
    # prepare lists its sources the same way
    pairs = split_pairs(data / "train", tmp_path / "out", after.classes, warn=warnings.append)["00_disc"]
    assert sorted(s for s, _ in pairs) == sorted(p for p, label in before.train if label == 0)


def copy_of(folders, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(folders, data)
    return data


@pytest.mark.parametrize("link", ["folder", "file"])
def test_a_file_reached_from_two_classes_is_refused_by_training_and_prepare(tmp_path, folders, link):
    """train/00_disc/squares -> ../01_square would label the squares as discs too: one sentence naming both
    paths, the same from train.py's listing and from prepare."""
    data = copy_of(folders, tmp_path)
    disc, square = data / "train" / "00_disc", data / "train" / "01_square"
    if link == "folder":
        (disc / "squares").symlink_to("../01_square", target_is_directory=True)
        shown, real = disc / "squares", square
    else:
        target = sorted(square.iterdir())[0]
        (disc / "a_square.jpg").symlink_to(f"../01_square/{target.name}")
        shown, real = disc / "a_square.jpg", target
    pattern = f"{shown} in class 00_disc and {real} in class 01_square are the same {link}"
    with pytest.raises(TrainError, match=pattern) as error:
        open_folders(data, None)
    assert "remove the link" in str(error.value) and str(error.value).count(". ") == 0
    with pytest.raises(PrepareError, match=pattern):
        prepare(data, tmp_path / "prepared", workers=1, log=lambda line: None)
    assert not (tmp_path / "prepared" / "train").exists()  # refused before writing anything


def test_a_link_to_a_folder_of_its_own_class_is_still_listed(tmp_path, folders):
    """Links within one class (data assembled from other trees) stay as they were: no error, no duplicates."""
    data = copy_of(folders, tmp_path)
    outside = tmp_path / "more_discs"
    shutil.copytree(data / "train" / "00_disc", outside)
    (data / "train" / "00_disc" / "more").symlink_to(outside, target_is_directory=True)
    splits = open_folders(data, None, warn=lambda line: pytest.fail(line))
    assert sum(label == 0 for _, label in splits.train) == 2 * sum(label == 1 for _, label in splits.train)


def test_hidden_folders_are_not_classes(tmp_path, folders):
    """A Jupyter .ipynb_checkpoints folder in both splits would otherwise be class 0 and shift every label."""
    data = copy_of(folders, tmp_path)
    before = open_folders(data, None)
    for split in ("train", "val"):
        (data / split / ".ipynb_checkpoints").mkdir()
        make_image(0, 1, split, 0).save(data / split / ".ipynb_checkpoints" / "x.jpg")
        (data / split / ".empty_hidden").mkdir()
    after = open_folders(data, None)
    assert after.classes == before.classes == ["00_disc", "01_square", "02_triangle"]
    assert after.train == before.train and after.val == before.val
    marker = prepare(data, tmp_path / "prepared", workers=1, log=lambda line: None)
    assert marker["splits"]["train"]["classes"] == 3
    assert not (tmp_path / "prepared" / "train" / ".ipynb_checkpoints").exists()
    assert open_folders(tmp_path / "prepared", None).classes == before.classes


@pytest.mark.parametrize("split", ["train", "val"])
def test_an_empty_class_folder_is_named(tmp_path, folders, split):
    data = copy_of(folders, tmp_path)
    for s in ("train", "val"):
        (data / s / "03_star").mkdir()
    make_image(0, 1, "train", 0).save(data / ("val" if split == "train" else "train") / "03_star" / "x.jpg")
    (data / split / "03_star" / "notes.txt").write_text("not an image")
    empty = data / split / "03_star"
    with pytest.raises(TrainError, match=f"class folder {empty} holds no images .*: put the class's images in it, "
                                         "or remove it from both train/ and val/"):
        open_folders(data, None)
    with pytest.raises(PrepareError, match=f"class folder {empty} holds no images"):
        prepare(data, tmp_path / "prepared", workers=1, log=lambda line: None)


def test_every_image_mode_loads_as_the_colours_it_shows(tmp_path):
    Image.fromarray(np.full((300, 400), 40000, np.uint16)).save(tmp_path / "deep.png")  # 16-bit grey, 61 %
    palette = Image.new("P", (400, 300), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.paste(1, (200, 0, 400, 300))  # right half red, left half index 0: transparent black
    palette.save(tmp_path / "palette.png", transparency=0)
    Image.new("LA", (300, 300), (30, 0)).save(tmp_path / "alpha.png")  # fully transparent dark grey
    Image.new("RGB", (300, 300), (200, 50, 30)).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    load = lambda name, c=3: load_image(str(tmp_path / name), c).astype(int)
    assert (load("deep.png") == 156).all() and (load("deep.png", 1) == 156).all()  # 40000 / 257, not clipped to 255
    assert (load("palette.png")[:, :100] == 255).all() and (load("palette.png")[:, -100:] == [255, 0, 0]).all()
    assert (load("alpha.png") == 255).all() and (load("alpha.png", 1) == 255).all()  # shown over white
    assert np.abs(load("cmyk.jpg") - [200, 50, 30]).max() <= 4


def test_an_image_too_large_for_pil_is_skipped_saying_why(tmp_path):
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    bomb = tmp_path / "huge.png"  # declares 20000 x 20000 pixels: past PIL's decompression-bomb limit
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
                     + chunk(b"IEND", b""))
    batch = collate([FolderDataset([(str(bomb), 0)], "center")[0]])
    assert len(batch) == 0 and batch.corrupt == [str(bomb)]
    logged = []
    CorruptLog(limit=5, log=logged.append).add(batch.corrupt, batch.reasons)
    assert len(logged) == 1 and str(bomb) in logged[0] and "decompression bomb" in logged[0], logged


@pytest.mark.parametrize("shape, pca, channels_last", [((4, 3, 9, 7), "paper", True), ((4, 3, 9, 7), None, False),
                                                       ((2, 10, 3, 5, 5), None, True)])
@pytest.mark.parametrize("pixels_last", [False, True])  # the uint8 batch's memory: collate gives pixels last
def test_model_input_in_one_pass_is_the_step_by_step_formula(shape, pca, channels_last, pixels_last):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen)
    if pixels_last:
        images = images.movedim(-3, -1).contiguous().movedim(-1, -3)
    alphas, mean = torch.randn(shape[0], 3, generator=gen) * 0.1, torch.tensor([123.7, 116.3, 103.5])
    x = to_model_input(images, alphas, mean, pca, "cpu", channels_last)
    want = images.float() - mean.view(-1, 1, 1)
    if pca:
        strength, vectors = data.PCA_NOISE[pca]
        want = want + ((alphas * strength) @ vectors.T).view(-1, 3, 1, 1)
    assert x.dtype == torch.float32 and x.shape == images.shape
    assert x.is_contiguous(memory_format=torch.channels_last if channels_last and len(shape) == 4
                           else torch.contiguous_format)
    torch.testing.assert_close(x, want, rtol=0, atol=1e-4)
    bf16 = to_model_input(images, alphas, mean, pca, "cpu", channels_last, torch.bfloat16)
    assert bf16.dtype == torch.bfloat16 and bf16.stride() == x.stride()
    assert torch.equal(bf16, x.to(torch.bfloat16))  # rounded once: what autocast makes of the float32 input


def test_the_input_is_bf16_only_under_amp_on_cuda():
    """--amp bf16 on CUDA: the loop writes the maps in bf16 (autocast's conv1 reads them so); elsewhere float32."""
    assert InputSpec(torch.device("cpu"), torch.zeros(3), amp="bf16").input_dtype == torch.float32
    assert InputSpec(torch.device("cpu"), torch.zeros(3)).input_dtype == torch.float32
    cuda = InputSpec.__new__(InputSpec)  # no CUDA device needed to read the rule
    cuda.device, cuda.amp = torch.device("cuda"), "bf16"
    assert cuda.input_dtype == torch.bfloat16
    cuda.amp = None
    assert cuda.input_dtype == torch.float32
