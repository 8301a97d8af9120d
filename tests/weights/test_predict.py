"""python -m alexnet2gpu.predict: a network trained on the built-in set names the class of newly generated
images; folders, the centre-crop option, ILSVRC words for wnids and unreadable files."""
import dataclasses
import zipfile

import pytest

from alexnet2gpu.data.synthetic import ensure_synthetic, make_image
from alexnet2gpu.weights.io import load_weights, save_safetensors
from alexnet2gpu.weights.predict import class_names, main, read_synsets
from tests.helpers.weights import train, write_untrained_checkpoint


def test_wnids_get_their_words_from_the_synset_file(tmp_path):
    (tmp_path / "LOC_synset_mapping.txt").write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n")
    words = read_synsets(tmp_path / "LOC_synset_mapping.txt")
    assert words == {"n01440764": "tench", "n01443537": "goldfish"}
    assert class_names(["n01443537", "n09999999", "02_cat"], 3, words) == ["goldfish (n01443537)", "n09999999",
                                                                           "02_cat"]
    assert class_names(None, 2, words) == ["class 0", "class 1"]


def test_a_synsets_file_that_cannot_be_read_is_one_sentence(tmp_path, capsys):
    weights = write_untrained_checkpoint(tmp_path / "run", num_classes=2)
    make_image(0, 2, "val", 0).save(tmp_path / "red.jpg")
    for synsets, reason in ((tmp_path / "words.txt", "No such file or directory"), (tmp_path, "Is a directory")):
        assert main([str(weights), str(tmp_path / "red.jpg"), "--synsets", str(synsets)]) == 1
        out, err = capsys.readouterr()
        assert out == "" and err == (f"predict: error: the synset words file {synsets} could not be read ({reason}): "
                                     "pass --synsets a file of 'n01440764 tench, Tinca tinca' lines, or leave "
                                     "--synsets out.\n")


ONNX_START = b"\x08\n\x12\x07pytorch\x1a\x0c2.14.1"  # the first bytes torch.onnx.export writes


def zip_of(path, *names):
    with zipfile.ZipFile(path, "w") as z:
        for name in names:
            z.writestr(name, b"x")
    return path


@pytest.mark.parametrize("name, content, says", [
    ("alexnet.onnx", ONNX_START, "an ONNX model, which runs in ONNX Runtime, not here (docs/using-weights.md shows how)"),
    ("renamed.pt", ONNX_START, "an ONNX model, which runs in ONNX Runtime, not here (docs/using-weights.md shows how)"),
    ("alexnet.pt2", ["alexnet/archive_format", "alexnet/models/model.json"],
     "a torch.export program (.pt2), which loads with torch.export.load(...).module(), not here "
     "(docs/using-weights.md shows how)"),
    ("program.zip", ["program/archive_format"], "a torch.export program (.pt2), which loads with "
                                                "torch.export.load(...).module(), not here (docs/using-weights.md shows how)"),
    ("photo.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF", "an image, not weights"),
    ("photos.pt", ["a.jpg"], "a zip archive that torch.save did not write (it holds no data.pkl)"),
    ("notes.pt", b"epochs: 90\n", "neither a train.py checkpoint nor a .safetensors file (it is no zip archive and "
                                   "has no safetensors header)"),
])
def test_a_file_that_holds_no_weights_is_named_with_what_it_is(tmp_path, capsys, name, content, says):
    """Decided by the file's first bytes (zip, safetensors header, ONNX, image) and, where they do not tell, its
    suffix; each refused in one sentence saying what predict (every weights reader) takes."""
    path = tmp_path / name
    zip_of(path, *content) if isinstance(content, list) else path.write_bytes(content)
    make_image(0, 2, "val", 0).save(tmp_path / "red.jpg")
    assert main([str(path), str(tmp_path / "red.jpg")]) == 1
    assert capsys.readouterr().err == (f"predict: error: {path} is {says}: pass a train.py checkpoint (.pt), a run "
                                       "folder or a .safetensors file.\n")


def test_a_safetensors_file_is_read_whatever_its_name(tmp_path):
    weights = load_weights(write_untrained_checkpoint(tmp_path / "run", num_classes=2))
    save_safetensors(weights, tmp_path / "w.safetensors")
    (tmp_path / "w.bin").symlink_to(tmp_path / "w.safetensors")
    assert load_weights(tmp_path / "w.bin").classes == weights.classes


@pytest.fixture(scope="module")
def trained(module_tmp):
    """Two classes of the built-in set (a red disc, a cyan square), 12 steps: enough to tell them apart."""
    data = ensure_synthetic(2, 8, 1, cache_dir=module_tmp("data"), log=lambda *a: None)
    out = module_tmp("runs")
    code = train.main(["--data", str(data), "--out", str(out), "--run-name", "r", "--epochs", "3", "--batch-size",
                       "4", "--workers", "0", "--device", "cpu", "--init", "caffe", "--pca", "none",
                       "--schedule", "step", "--lr-steps", "100", "--val-per-class", "1"])
    assert code == 0
    return out / "r"  # the run folder: its latest checkpoint


@pytest.mark.slow
def test_predict_names_the_class_of_new_images(trained, tmp_path, capsys):
    folder = tmp_path / "images"
    (folder / "more").mkdir(parents=True)
    truth = {}
    for label in (0, 1):
        for i in range(2):  # indices the training run never saw
            path = folder / ("more" if i else "") / f"img_{label}_{i}.{'png' if i else 'jpg'}"
            make_image(label, 2, "val", 100 + i).save(path)
            truth[str(path)] = label
    classes = load_weights(trained).classes
    for crop_args in ([], ["--center-crop"]):
        assert main([str(trained), str(folder), "--top", "2"] + crop_args) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        assert len(lines) == 4
        for line in lines:
            path, ranked = line.split(": ", 1)
            (top1, p1), (top2, p2) = [item.rsplit(" ", 1) for item in ranked.split(" | ")]
            assert top1 == classes[truth[path]] and top2 == classes[1 - truth[path]], line
            assert float(p1) > float(p2) and abs(float(p1) + float(p2) - 1) < 2e-3


@pytest.mark.slow
def test_predict_shows_ilsvrc_words_and_names_unreadable_files(trained, tmp_path, capsys):
    root = tmp_path / "ilsvrc"
    root.mkdir()
    (root / "synset_words.txt").write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n")
    weights = load_weights(trained)
    renamed = dataclasses.replace(weights, classes=["n01440764", "n01443537"], config=dict(weights.config, data=str(root)))
    save_safetensors(renamed, tmp_path / "w.safetensors")
    make_image(0, 2, "val", 200).save(tmp_path / "red.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 cut short")
    code = main([str(tmp_path / "w.safetensors"), str(tmp_path / "red.jpg"), str(tmp_path / "broken.jpg")])
    out, err = capsys.readouterr()
    assert code == 1 and f"{tmp_path / 'broken.jpg'} could not be read as an image" in err
    assert out.startswith(f"{tmp_path / 'red.jpg'}: tench (n01440764) ") and len(out.splitlines()) == 1
    assert main([str(trained), str(tmp_path / "nowhere")]) == 1
    assert "nowhere does not exist" in capsys.readouterr().err
