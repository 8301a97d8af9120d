"""The one-time down-sampling to 256x256 (paper §2): outputs, colour modes, broken sources, ILSVRC's flat val/,
resuming after a kill, the marker, and one-sentence errors."""
import fcntl
import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexnet2gpu.data.folders import load_image
from alexnet2gpu.data.imaging import resize_center, to_rgb
from alexnet2gpu.data.prepare import prepare as prep
from alexnet2gpu.data.prepare.measure import photo_like, psnr
from alexnet2gpu.data.prepare.plan import output_names
from alexnet2gpu.data.prepare.prepare import ERRORS, MARKER, TMP_SUFFIX, main, prepare, prepared_info
from alexnet2gpu.data.prepare.val_labels import read_val_labels
from tests.helpers.child_env import child_env

BROKEN = {"train/n02/broken.JPEG", "train/n02/cut.JPEG", "train/n02/bomb.png", "train/n02/fake.jpg"}
VAL = {"ILSVRC2012_val_00000001.JPEG": "n01", "ILSVRC2012_val_00000002.JPEG": "n02",
       "ILSVRC2012_val_00000003.JPEG": "n01"}


def quiet(*_):
    pass


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels and holds none: PIL refuses it at open (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def make_tree(src: Path) -> None:
    n01, n02, val = src / "train" / "n01", src / "train" / "n02", src / "val"
    for folder in (n01, n02, val):
        folder.mkdir(parents=True)
    photo_like(1, 800, 600).save(n01 / "big_1.JPEG", quality=92)
    photo_like(2, 600, 800).save(n01 / "big_2.JPEG", quality=92)
    grey = np.full((300, 400), 200, np.uint8)
    grey[100:200, 150:250] = 40
    Image.fromarray(grey, "L").save(n01 / "grey.JPEG")
    Image.new("RGB", (400, 300), (200, 50, 30)).convert("CMYK").save(n01 / "cmyk.JPEG", quality=95)
    palette = Image.new("P", (400, 300), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.paste(1, (200, 0, 400, 300))  # right half red, left half index 0: transparent black
    palette.save(n02 / "palette.png", transparency=0)
    Image.fromarray(np.full((300, 400), 128 * 257, np.uint16)).save(n02 / "deep.png")  # 16-bit grey 50%
    photo_like(3, 320, 280).save(n02 / "pic.png")
    photo_like(4, 320, 280).save(n02 / "disguised.JPEG", format="PNG")  # ILSVRC has PNGs named .JPEG
    (n02 / "broken.JPEG").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    whole = io.BytesIO()
    photo_like(5, 500, 375).save(whole, "JPEG", quality=90)
    (n02 / "cut.JPEG").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    (n02 / "bomb.png").write_bytes(png_header_only(20000, 20000))
    (n02 / "fake.jpg").write_text("a text file with an image's name")
    (n02 / "notes.txt").write_text("not an image extension: ignored, as train.py ignores it")
    for i, name in enumerate(VAL):
        photo_like(10 + i, 500, 375).save(val / name, quality=92)
    photo_like(20, 500, 375).save(val / "ILSVRC2012_val_00000004.JPEG", quality=92)  # not in the labels file
    rows = "".join(f"{Path(n).stem},{w} 10 20 300 200 {w} 5 5 50 50\n" for n, w in VAL.items())
    (src / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + rows)


@pytest.fixture(scope="module")
def done(module_tmp):
    """A source tree and its prepared copy (two workers: the Pool path)."""
    root = module_tmp("prep")
    make_tree(root / "src")
    lines = []
    marker = prepare(root / "src", root / "dst", workers=2, log=lines.append)
    return root / "src", root / "dst", marker, lines


def outputs(dst: Path) -> set[str]:
    return {p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file() and p.parent != dst}


def test_outputs_are_256_rgb_jpegs_in_their_class_folders(done):
    src, dst, _, _ = done
    assert outputs(dst) == {
        "train/n01/big_1.JPEG", "train/n01/big_2.JPEG", "train/n01/grey.JPEG", "train/n01/cmyk.JPEG",
        "train/n02/palette.jpg", "train/n02/deep.jpg", "train/n02/pic.jpg", "train/n02/disguised.JPEG",
        "val/n01/ILSVRC2012_val_00000001.JPEG", "val/n02/ILSVRC2012_val_00000002.JPEG",
        "val/n01/ILSVRC2012_val_00000003.JPEG"}
    for name in outputs(dst):
        with Image.open(dst / name) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (256, 256)), name


def test_outputs_match_what_training_computes_from_the_source(done):
    src, dst, _, _ = done
    for name in ("train/n01/big_1.JPEG", "train/n01/big_2.JPEG", "train/n02/pic.jpg"):
        source = src / name.replace("pic.jpg", "pic.png")
        assert psnr(load_image(str(source), 3), load_image(str(dst / name), 3)) > 30  # only the re-encoding differs


def test_every_colour_mode_gives_the_colours_it_shows(done):
    _, dst, _, _ = done
    pixels = {n: np.asarray(Image.open(dst / "train" / n)).astype(int) for n in
              ("n01/grey.JPEG", "n01/cmyk.JPEG", "n02/palette.jpg", "n02/deep.jpg")}
    grey = pixels["n01/grey.JPEG"]
    assert np.abs(grey - grey[..., :1]).max() <= 2 and abs(grey[5, 5, 0] - 200) <= 2 and grey[128, 128, 0] < 60
    assert np.abs(pixels["n01/cmyk.JPEG"][128, 128] - [200, 50, 30]).max() <= 4  # not inverted, not garbage
    palette = pixels["n02/palette.jpg"]
    assert (palette[128, 20] >= 250).all()  # transparent: white, not the black stored under it
    assert np.abs(palette[128, 235] - [255, 0, 0]).max() <= 6
    assert np.abs(pixels["n02/deep.jpg"] - 128).max() <= 1  # 16-bit 50 % grey -> 128, not clipped to 255


def test_broken_sources_are_listed_exactly_and_counted(done):
    src, dst, marker, lines = done
    rows = [line.split("\t") for line in (dst / ERRORS).read_text().splitlines()]
    assert all(len(r) == 2 and r[1] for r in rows)
    reasons = {Path(path).relative_to(src).as_posix(): reason for path, reason in rows}
    assert set(reasons) == BROKEN | {"val/ILSVRC2012_val_00000004.JPEG"}
    assert "decompression bomb" in reasons["train/n02/bomb.png"]
    assert "truncated" in reasons["train/n02/cut.JPEG"]
    assert reasons["val/ILSVRC2012_val_00000004.JPEG"].startswith("no label in")
    assert marker["splits"]["train"] == dict(written=8, skipped=0, failed=4, classes=2)
    assert marker["splits"]["val"] == dict(written=3, skipped=0, failed=1, classes=2)
    assert "11 written, 0 already done, 5 failed" in lines[-1] and str(dst / ERRORS) in lines[-1]


def test_marker_says_what_was_done(done):
    src, dst, marker, _ = done
    assert prepared_info(dst) == marker == json.loads((dst / MARKER).read_text())
    assert (marker["format"], marker["size"], marker["quality"]) == (prep.FORMAT, 256, prep.DEFAULT_QUALITY)
    assert marker["source"] == str(src.resolve()) and marker["val_labels"].endswith("LOC_val_solution.csv")
    assert marker["finished"] and marker["version"]
    assert prepared_info(src) is None


def test_training_uses_a_prepared_file_exactly_as_decoded(done):
    _, dst, _, _ = done
    path = dst / "train" / "n01" / "big_1.JPEG"
    np.testing.assert_array_equal(load_image(str(path), 3), np.asarray(Image.open(path).convert("RGB")))
    im = Image.open(path)
    im.load()
    assert resize_center(im) is im  # 256x256: no resize, no crop


def test_rerun_skips_finished_outputs_and_removes_temporaries(done, tmp_path):
    src, dst, _, _ = done
    copy = tmp_path / "dst"
    shutil.copytree(dst, copy)
    (copy / "train" / "n01" / f"big_1.JPEG.123{TMP_SUFFIX}").write_bytes(b"half a file")
    (copy / "train" / "n01" / "grey.JPEG").write_bytes(b"")  # empty after a power cut: not done
    lines = []
    marker = prepare(src, copy, workers=1, log=lines.append)
    assert marker["splits"]["train"] == dict(written=1, skipped=7, failed=4, classes=2)  # broken ones retried
    assert not list(copy.rglob(f"*{TMP_SUFFIX}"))
    assert Image.open(copy / "train" / "n01" / "grey.JPEG").size == (256, 256)
    assert "1 written, 10 already done, 5 failed" in lines[-1]


def test_logs_get_plain_progress_lines_when_stdout_is_not_a_terminal(tmp_path, monkeypatch):
    src = flat_val_tree(tmp_path, "n05\nn07\nn05\n")
    monkeypatch.setattr(prep, "LOG_EVERY_S", 0.0)  # every image instead of every 10 s
    lines = []
    prepare(src, tmp_path / "dst", workers=1, log=lines.append)
    progress = [line for line in lines if "img/s" in line]
    assert len(progress) == 3 and "3/3" in progress[-1] and "ETA" in progress[-1]


@pytest.mark.slow
def test_a_killed_run_resumes_to_a_complete_folder(tmp_path):
    """SIGKILL the CLI (and its workers) once some outputs exist, rerun, and get every image whole."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    folder = src / "train" / "n01"
    folder.mkdir(parents=True)
    noise = np.random.default_rng(0).integers(0, 256, (1500, 2000, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "big.png", compress_level=1)  # ~50 ms to decode and resize
    for i in range(60):
        os.link(tmp_path / "big.png", folder / f"img_{i:03d}.png")
    env = child_env()
    run = subprocess.Popen([sys.executable, "-m", "alexnet2gpu.prepare", str(src), str(dst), "--workers", "1"],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while len(list(dst.rglob("*.jpg"))) < 6 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert 6 <= len(list(dst.rglob("*.jpg"))) < 60 and not (dst / MARKER).exists()
    assert main([str(src), str(dst), "--workers", "2"]) == 0
    images = sorted(dst.rglob("*.jpg"))
    assert [p.name for p in images] == [f"img_{i:03d}.jpg" for i in range(60)]
    for p in images:
        with Image.open(p) as im:
            im.load()
            assert im.size == (256, 256)
    assert not list(dst.rglob(f"*{TMP_SUFFIX}")) and not (dst / ERRORS).exists()
    info = prepared_info(dst)
    assert info["splits"]["train"]["written"] + info["splits"]["train"]["skipped"] == 60


def flat_val_tree(root: Path, labels: str | None = None, name: str = "val_labels.txt") -> Path:
    src = root / "src"
    (src / "val").mkdir(parents=True)
    for i in range(3):
        photo_like(i, 300, 260).save(src / "val" / f"v{i}.JPEG")
    if labels is not None:
        (src / name).write_text(labels)
    return src


def test_flat_val_without_labels_is_one_sentence_naming_the_file_and_flag(tmp_path, capsys):
    src = flat_val_tree(tmp_path)
    assert main([str(src), str(tmp_path / "dst")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("prepare: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert "--val-labels" in err and "LOC_val_solution.csv" in err and str(src / "val_labels.txt") in err


@pytest.mark.parametrize("text", ["v0.JPEG n05\nv1.JPEG n07\nv2.JPEG n05\n", "v0 n05\nv1 n07\nv2 n05\n",
                                  "n05\nn07\nn05\n"])
def test_text_labels_with_or_without_file_names(tmp_path, text):
    src = flat_val_tree(tmp_path, text)
    prepare(src, tmp_path / "dst", workers=1, log=quiet)
    assert outputs(tmp_path / "dst") == {"val/n05/v0.JPEG", "val/n07/v1.JPEG", "val/n05/v2.JPEG"}


def test_class_folders_and_sub_folders_beside_a_flat_val(tmp_path):
    src = flat_val_tree(tmp_path, "n05\nn07\nn05\n")
    (src / "val" / "n09" / "sub").mkdir(parents=True)
    photo_like(7, 300, 260).save(src / "val" / "n09" / "sub" / "deep.png")
    marker = prepare(src, tmp_path / "dst", workers=1, log=quiet)
    assert outputs(tmp_path / "dst") == {"val/n05/v0.JPEG", "val/n07/v1.JPEG", "val/n05/v2.JPEG",
                                         "val/n09/sub/deep.jpg"}
    assert marker["splits"]["val"]["classes"] == 3


@pytest.mark.parametrize("text, message", [
    ("n05\nn07\n", "2 lines of one wnid each but val/ holds 3 images"),
    ("v0.JPEG n05\nv1.JPEG\n", "line 2 of .* is not '<filename> <wnid>'"),
    ("Id,Label\nv0,n05\n", "not 'ImageId,PredictionString'"),
    ("x9 n05\n", "names none of the 3 images"),
    ("v0 ..\nv1 n05\nv2 n05\n", "cannot be a folder name"),
])
def test_bad_labels_files_are_named_with_the_fix(tmp_path, text, message):
    (tmp_path / "labels").write_text(text)
    with pytest.raises(prep.PrepareError, match=message):
        read_val_labels(tmp_path / "labels", ["v0.JPEG", "v1.JPEG", "v2.JPEG"])


@pytest.mark.parametrize("text, line", [
    ("v0.JPEG n05\nv1.JPEG n07\nv2.JPEG n05\n\nv0.JPEG n07\n", 5),  # the blank line counts: the file's numbers
    ("v0.JPEG n05\nv1 n07\nv2 n05\nv0 n07\n", 4),  # the same image with and without its extension
    ("ImageId,PredictionString\nv0.JPEG,n05 1 2 30 40\nv1,n07 1 2 30 40\nv2,n05 1 2 30 40\nv0,n07 1 2 30 40\n", 5),
])
def test_an_image_labelled_twice_with_two_classes_is_refused(tmp_path, text, line):
    """The last line used to win silently; which one is right only the user can tell."""
    (tmp_path / "labels").write_text(text)
    with pytest.raises(prep.PrepareError) as error:
        read_val_labels(tmp_path / "labels", ["v0.JPEG", "v1.JPEG", "v2.JPEG"])
    first = 2 if text.startswith("ImageId") else 1
    assert str(error.value) == (f"{tmp_path / 'labels'} gives v0.JPEG two classes, n05 on line {first} and n07 on "
                                f"line {line}: remove the wrong line.")


def test_an_image_labelled_twice_with_one_class_is_accepted(tmp_path):
    (tmp_path / "labels").write_text("v0.JPEG n05\nv1 n07\nv2 n05\nv0 n05\n")  # files joined, say
    assert read_val_labels(tmp_path / "labels", ["v0.JPEG", "v1.JPEG", "v2.JPEG"]) == dict(
        zip(["v0.JPEG", "v1.JPEG", "v2.JPEG"], ["n05", "n07", "n05"]))


def test_val_labels_must_name_train_classes(tmp_path, capsys):
    src = flat_val_tree(tmp_path, "v0 65\nv1 12\nv2 65\n")  # class numbers, as caffe's val.txt has
    (src / "train" / "n05").mkdir(parents=True)
    photo_like(0, 300, 260).save(src / "train" / "n05" / "t.JPEG")
    assert main([str(src), str(tmp_path / "dst")]) == 2
    assert "2 classes that are not class folders of" in capsys.readouterr().err


def test_bad_arguments_are_one_sentence_and_exit_2(done, tmp_path, capsys):
    src, dst, _, _ = done
    (tmp_path / "neither").mkdir()
    (tmp_path / "afile").write_text("")
    cases = [
        ([str(tmp_path / "nowhere"), str(tmp_path / "o1")], "does not exist"),
        ([str(tmp_path / "neither"), str(tmp_path / "o2")], "has neither train/ nor val/"),
        ([str(src), str(src / "out")], "is inside SRC"),
        ([str(src), str(tmp_path / "afile" / "out")], "cannot write to DST"),
        ([str(src), str(tmp_path / "o3"), "--quality", "0"], "outside 1..100"),
        ([str(src), str(tmp_path / "o4"), "--workers", "0"], "not a positive number"),
        ([str(src), str(dst), "--quality", "75"], "was prepared at --quality 90"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("prepare: error: ") and message in err and err.count("\n") == 1, err


def test_a_full_disk_stops_with_one_sentence_and_exit_1(tmp_path, monkeypatch, capsys):
    src = flat_val_tree(tmp_path, "n05\nn07\nn05\n")

    def full(image, path, quality):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(prep, "write_jpeg_atomic", full)
    assert main([str(src), str(tmp_path / "dst"), "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("prepare: error: could not write ") and "No space left on device" in err
    assert "rerun the same command" in err and err.count("\n") == 1 and not (tmp_path / "dst" / MARKER).exists()


def test_an_unfinished_folder_continues_only_at_its_own_quality(tmp_path, monkeypatch, capsys):
    """A resumed run at another --quality would mix qualities under a marker that names one: refused, as for a
    finished folder, before anything is written."""
    src, dst = flat_val_tree(tmp_path, "n05\nn07\nn05\n"), tmp_path / "dst"
    write = prep.write_jpeg_atomic

    def full_after_one(image, path, quality):
        if list(dst.rglob("*.JPEG")):
            raise OSError(28, "No space left on device")
        write(image, path, quality)
    monkeypatch.setattr(prep, "write_jpeg_atomic", full_after_one)
    assert main([str(src), str(dst), "--workers", "1", "--quality", "95"]) == 1
    monkeypatch.setattr(prep, "write_jpeg_atomic", write)
    written = {p: p.read_bytes() for p in dst.rglob("*.JPEG")}
    assert len(written) == 1 and not (dst / MARKER).exists()
    capsys.readouterr()
    assert main([str(src), str(dst), "--workers", "1"]) == 2  # the default, quality 90
    err = capsys.readouterr().err
    assert err == (f"prepare: error: {dst} holds an unfinished preparation at --quality 95: rerun with --quality 95 "
                   "to continue it, or pick an empty DST.\n")
    assert {p: p.read_bytes() for p in dst.rglob("*.JPEG")} == written  # nothing lost, nothing added
    assert main([str(src), str(dst), "--workers", "1", "--quality", "95"]) == 0
    assert prepared_info(dst)["quality"] == 95 and len(list(dst.rglob("*.JPEG"))) == 3
    assert sorted(p.name for p in dst.iterdir() if p.is_file()) == [prep.LOCK, MARKER]  # the start record is gone
    assert main([str(src), str(dst), "--workers", "1", "--quality", "90"]) == 2  # and the marker still guards it
    assert "was prepared at --quality 95" in capsys.readouterr().err


def test_an_unwritable_output_folder_stops_with_one_sentence_and_exit_1(tmp_path, capsys):
    src = flat_val_tree(tmp_path, "n05\nn07\nn05\n")
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "val").write_text("a file where prepare needs a folder")
    assert main([str(src), str(tmp_path / "dst")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("prepare: error: ") and "rerun the same command" in err and err.count("\n") == 1


def test_a_second_run_on_the_same_folder_is_refused(done, tmp_path, capsys):
    src, _, _, _ = done
    (tmp_path / "dst").mkdir()
    with open(tmp_path / "dst" / prep.LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert main([str(src), str(tmp_path / "dst")]) == 2
    assert "another prepare run is writing" in capsys.readouterr().err


def test_output_names_keep_jpeg_names_and_never_collide():
    assert output_names(["a.JPEG", "b.png", "c.jpeg"]) == {"a.JPEG": "a.JPEG", "b.png": "b.jpg", "c.jpeg": "c.jpeg"}
    assert output_names(["x.jpg", "x.png", "x.bmp"]) == {"x.jpg": "x.jpg", "x.png": "x.png.jpg", "x.bmp": "x.bmp.jpg"}


@pytest.mark.parametrize("mode", ["LA", "RGBA", "La", "RGBa", "I", "I;16B", "1", "CMYK", "YCbCr"])
def test_to_rgb_takes_every_mode(mode):
    im = Image.new(mode, (4, 4))
    out = to_rgb(im)
    assert out.mode == "RGB" and out.size == (4, 4)


def test_a_needle_thin_image_is_resized_without_a_huge_intermediate():
    out = resize_center(Image.new("RGB", (100000, 3), (10, 20, 30)))  # plain path: 8.5 M x 256 pixels
    assert out.size == (256, 256) and out.getpixel((128, 128)) == (10, 20, 30)
