"""python -m alexnet2gpu.export: each format written, read back and run, with logits matching the
checkpoint's (ONNX Runtime within 1e-4 relative, as the command itself checks); a missing folder is made, one
that cannot be written is one sentence."""
import json
import os
from pathlib import Path

import pytest
import torch

from alexnet2gpu.model.stack import StackOptions
from alexnet2gpu.weights.export import (CHECK_BATCH, FORMATS, PT2_META, TOLERANCE, exportable, main, random_input,
                                        relative_difference)
from alexnet2gpu.weights.hub import load_network
from alexnet2gpu.weights.io import load_weights
from alexnet2gpu.weights.predict import main as predict_main
from tests.helpers.weights import write_untrained_checkpoint


@pytest.fixture(scope="module")
def checkpoint(module_tmp):
    return write_untrained_checkpoint(module_tmp("run"), num_classes=10)


def reference_logits(checkpoint, x):
    with torch.no_grad():
        return load_network(checkpoint).eval()(x)


def test_bad_suffix_and_missing_weights_are_one_sentence(tmp_path, checkpoint, capsys):
    assert main([str(checkpoint), str(tmp_path / "w.bin")]) == 1
    assert "cannot tell the format of" in capsys.readouterr().err
    assert main([str(tmp_path / "none.safetensors"), str(tmp_path / "w.onnx")]) == 1
    assert "none.safetensors does not exist" in capsys.readouterr().err


def test_a_missing_folder_is_made(checkpoint, tmp_path):
    out = tmp_path / "out" / "deeper" / "w.safetensors"
    assert main([str(checkpoint), str(out)]) == 0
    assert load_weights(out).num_classes == 10


@pytest.mark.parametrize("suffix", FORMATS)
def test_a_read_only_folder_is_one_sentence(checkpoint, tmp_path, monkeypatch, capsys, suffix):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    real_access = os.access  # root writes through mode bits: answer as access(2) does for a user or a read-only mount
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: not (Path(p) == folder and mode & os.W_OK)
                        and real_access(p, mode, **kw))
    out = folder / f"w{suffix}"
    assert main([str(checkpoint), str(out)]) == 1
    assert capsys.readouterr().err == (f"export: error: cannot write {out}: the folder {folder} is read-only; pass "
                                       "a path in a folder you can write to.\n")
    assert not list(folder.iterdir())


def test_a_failed_write_is_one_sentence_and_keeps_the_file_there(checkpoint, tmp_path, monkeypatch, capsys):
    out = tmp_path / "w.safetensors"
    out.write_bytes(b"an earlier export")

    def disk_full(tensors, path, metadata=None):
        Path(path).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("safetensors.torch.save_file", disk_full)
    assert main([str(checkpoint), str(out)]) == 1
    assert capsys.readouterr().err == (f"export: error: could not write {out} (No space left on device): free disk "
                                       "space, or pass a path on another disk.\n")
    assert out.read_bytes() == b"an earlier export" and sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


def test_the_exported_network_differs_only_in_its_lrn_form(checkpoint):
    """What the exporters trace: the same network, its LRN as the plain formula, in inference mode."""
    weights = load_weights(checkpoint)
    model, traced = load_network(weights).eval(), exportable(weights)
    assert traced.stack.options == StackOptions(lrn="formula") and not traced.training
    assert model.stack.options == StackOptions()
    x = random_input(weights, 2)
    with torch.no_grad():
        assert relative_difference(traced(x), model(x)) < 1e-5


@pytest.mark.slow
def test_onnx_runs_in_onnx_runtime_with_the_checkpoints_logits(checkpoint, tmp_path, capsys):
    import onnxruntime as ort
    out = tmp_path / "new" / "a.onnx"  # its folder is made
    assert main([str(checkpoint), str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"ONNX Runtime vs PyTorch logits on a random batch of {CHECK_BATCH}: largest difference" in printed
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 3, 224, 224) * 60  # another batch size than traced: the batch is dynamic
    got = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
    assert relative_difference(got, reference_logits(checkpoint, x)) < TOLERANCE
    meta = {p.key: p.value for p in __import__("onnx").load(str(out), load_external_data=False).metadata_props}
    assert json.loads(meta["classes"]) == [f"c{i}" for i in range(10)] and meta["crop"] == "224"
    refused_by_predict(out, "an ONNX model, which runs in ONNX Runtime", tmp_path, capsys)


def refused_by_predict(path, says, tmp_path, capsys):
    """An exported .onnx or .pt2 file given to predict: one sentence naming what it is and what predict takes."""
    capsys.readouterr()  # what the export printed
    assert predict_main([str(path), str(tmp_path)]) == 1
    assert capsys.readouterr().err == (f"predict: error: {path} is {says}, not here (docs/using-weights.md shows "
                                       "how): pass a train.py checkpoint (.pt), a run folder or a .safetensors "
                                       "file.\n")


@pytest.mark.slow
def test_pt2_and_safetensors_reload_with_the_checkpoints_logits(checkpoint, tmp_path, capsys):
    assert main([str(checkpoint), str(tmp_path / "a.safetensors")]) == 0
    # the .pt2 is made from the .safetensors file: every exporter reads every weights format
    assert main([str(tmp_path / "a.safetensors"), str(tmp_path / "new" / "a.pt2")]) == 0  # its folder is made
    x = torch.randn(4, 3, 224, 224) * 60
    want = reference_logits(checkpoint, x)
    torch.testing.assert_close(reference_logits(tmp_path / "a.safetensors", x), want, rtol=0, atol=0)
    extra = {PT2_META: ""}
    program = torch.export.load(str(tmp_path / "new" / "a.pt2"), extra_files=extra)
    with torch.no_grad():
        assert relative_difference(program.module()(x), want) < 1e-5
    assert json.loads(json.loads(extra[PT2_META])["mean"]) == [120.0, 115.0, 100.0]
    refused_by_predict(tmp_path / "new" / "a.pt2", "a torch.export program (.pt2), which loads with "
                       "torch.export.load(...).module()", tmp_path, capsys)
