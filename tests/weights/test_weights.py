"""Weights in and out: the hub entry from this clone, .safetensors files read wherever a checkpoint is (and
refused when damaged), fine-tuning with --init-from (fc8 drawn afresh for other classes), and each missing
extra's message."""
import json
import os
import shutil
import sys

import pytest
import torch

from alexnet2gpu import AlexNet
from alexnet2gpu.errors import TrainError
from alexnet2gpu.weights.io import Weights, initial_weights, load_weights, save_safetensors
from tests.helpers import ROOT
from tests.helpers.weights import flip_bytes, train, write_untrained_checkpoint


@pytest.fixture(scope="module")
def checkpoint10(module_tmp):
    return write_untrained_checkpoint(module_tmp("run10"), num_classes=10)


def test_hub_loads_from_the_clone_with_and_without_weights(checkpoint10, tmp_path):
    fresh = torch.hub.load(str(ROOT), "alexnet", source="local", num_classes=7, init="caffe")
    assert isinstance(fresh, AlexNet) and fresh.fc8.out_features == 7 and not hasattr(fresh, "classes")
    net = torch.hub.load(str(ROOT), "alexnet", source="local", weights=str(checkpoint10)).eval()
    want = load_weights(checkpoint10)
    assert net.classes == want.classes and net.mean == want.mean and net.crop == 224
    for name, tensor in net.state_dict().items():
        assert torch.equal(tensor, want.model[name]), name
    # the same weights through a .safetensors file and in the two-device layout give the same logits
    save_safetensors(want, tmp_path / "w.safetensors")
    towers = torch.hub.load(str(ROOT), "alexnet", source="local", weights=str(tmp_path / "w.safetensors"),
                            layout="two-device", devices=("cpu", "cpu")).eval()
    x = torch.randn(2, 3, 224, 224) * 50
    with torch.no_grad():
        torch.testing.assert_close(towers(x), net(x), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="num_classes=3 but the weights in .* have num_classes=10"):
        torch.hub.load(str(ROOT), "alexnet", source="local", weights=str(checkpoint10), num_classes=3)


def test_safetensors_keeps_the_weights_and_what_using_them_needs(checkpoint10, tmp_path):
    want = load_weights(checkpoint10)
    save_safetensors(want, tmp_path / "w.safetensors")
    got = load_weights(tmp_path / "w.safetensors")
    assert set(got.model) == set(want.model) and all(torch.equal(got.model[k], want.model[k]) for k in want.model)
    assert (got.classes, got.mean, got.crop, got.epoch, got.num_classes, got.in_channels) == \
        (want.classes, want.mean, 224, 1, 10, 3)
    assert got.config == want.config
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(TrainError, match="bad.safetensors is damaged or not a safetensors file"):
        load_weights(tmp_path / "bad.safetensors")


def test_hub_refuses_zero_and_negative_sizes(checkpoint10):
    for name in ("num_classes", "in_channels"):
        for value in (0, -3):
            with pytest.raises(ValueError, match=rf"^{name} must be a whole number of at least 1, got {value}"):
                torch.hub.load(str(ROOT), "alexnet", source="local", **{name: value})
    with pytest.raises(ValueError, match=r"^num_classes must be a whole number of at least 1, got 0"):
        torch.hub.load(str(ROOT), "alexnet", source="local", weights=str(checkpoint10), num_classes=0)


@pytest.fixture(scope="module")
def exported(checkpoint10, module_tmp):
    path = module_tmp("exported") / "w.safetensors"
    save_safetensors(load_weights(checkpoint10), path)
    return path


def test_a_damaged_safetensors_file_is_one_sentence(exported, tmp_path):
    """Flipped bytes fail the CRC-32s the exporter stores; a cut, lengthened or garbled file fails safetensors'
    own checks of its header against its size."""
    flipped = shutil.copy(exported, tmp_path / "flipped.safetensors")
    flip_bytes(flipped, "fc6.weight")
    with pytest.raises(TrainError, match=r"^\S+flipped.safetensors is damaged \(a CRC check fails in fc6.weight\): "
                                         r"export it again from its checkpoint\.$"):
        load_weights(flipped)
    data = exported.read_bytes()
    for name, content in {"cut": data[:-1000], "longer": data + bytes(8), "garbled": data[:8] + b"#" * 16 + data[24:],
                          "empty": b""}.items():
        (tmp_path / f"{name}.safetensors").write_bytes(content)
        with pytest.raises(TrainError, match=rf"{name}.safetensors is damaged or not a safetensors file \(.+\): "
                                             r"export it again from its checkpoint\.$"):
            load_weights(tmp_path / f"{name}.safetensors")


def write_safetensors(path, model, **metadata):
    """A .safetensors file as another tool (or an older export, without CRC-32s) writes one."""
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in model.items()}, str(path), metadata=metadata)
    return path


def test_a_safetensors_file_without_crcs_loads_unless_a_weight_is_not_finite(checkpoint10, tmp_path):
    model = load_weights(checkpoint10).model
    plain = write_safetensors(tmp_path / "plain.safetensors", model, classes=json.dumps([f"c{i}" for i in range(10)]))
    got = load_weights(plain)
    assert all(torch.equal(got.model[k], model[k]) for k in model) and got.classes[9] == "c9" and got.mean is None
    bias = model["fc7.bias"].clone()
    bias[5] = float("nan")
    nan = write_safetensors(tmp_path / "nan.safetensors", dict(model, **{"fc7.bias": bias}))
    with pytest.raises(TrainError, match=r"nan.safetensors holds a value that is not finite \(NaN or infinite\) in "
                                         r"fc7.bias: it is damaged, or its run diverged; use other weights\.$"):
        load_weights(nan)


@pytest.mark.parametrize("metadata, says", [
    (dict(classes='"c0 c1"'), r"'classes' must be a JSON list of 10 class names \(one per row of fc8\), not a str"),
    (dict(classes=json.dumps(["c0", "c1"])), r"'classes' must be a JSON list of 10 class names .*, not 2 names"),
    (dict(classes=json.dumps(list(range(10)))), r"'classes' must be a JSON list of 10 class names .*, not a list "
                                                r"holding 0"),
    (dict(classes="[c0, c1"), r"'classes' is not JSON"),
    (dict(mean=json.dumps([1.0, 2.0])), r"'mean' must be a JSON list of 3 numbers \(one per input channel\), not 2 "
                                        r"numbers"),
    (dict(crop='"big"'), r"'crop' must be 224 or 227, not 'big'"),
])
def test_safetensors_metadata_that_cannot_be_used_is_one_sentence(checkpoint10, tmp_path, metadata, says):
    path = write_safetensors(tmp_path / "meta.safetensors", load_weights(checkpoint10).model, **metadata)
    with pytest.raises(TrainError, match=rf"^\S+meta.safetensors has metadata that cannot be used: {says}; export it "
                                         r"again from its checkpoint\.$"):
        load_weights(path)


def test_resume_from_a_safetensors_file_says_to_use_init_from(tmp_path, checkpoint10, capsys):
    save_safetensors(load_weights(checkpoint10), tmp_path / "w.safetensors")
    code = train.main(["--resume", str(tmp_path / "w.safetensors"), "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 1 and "holds weights only" in err and "--init-from" in err


def test_a_missing_extra_is_named_in_one_sentence(monkeypatch, tmp_path, checkpoint10):
    monkeypatch.setitem(sys.modules, "safetensors", None)  # import now raises ImportError
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(TrainError, match=r"needs the safetensors package.*pip install 'alexnet2gpu\[export\]'"):
        save_safetensors(load_weights(checkpoint10), tmp_path / "w.safetensors")
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    from alexnet2gpu.train.board import Board
    with pytest.raises(TrainError, match=r"--tensorboard needs the tensorboard package.*alexnet2gpu\[tensorboard\]"):
        Board(tmp_path)


def test_initial_weights_draw_fc8_afresh_for_other_classes_and_name_any_other_mismatch():
    theirs = Weights(AlexNet(10, init="caffe").state_dict(), "ten.pt", epoch=4)
    fresh = AlexNet(3, init="caffe").state_dict()
    start, note = initial_weights(fresh, theirs)
    assert torch.equal(start["fc8.weight"], fresh["fc8.weight"]) and start["fc8.weight"].shape == (3, 4096)
    assert all(torch.equal(start[k], theirs.model[k]) for k in start if not k.startswith("fc8"))
    assert "fc8, which is drawn afresh for 3 classes (the weights have 10)" in note and "epoch 4" in note
    same, note = initial_weights(AlexNet(10).state_dict(), theirs)
    assert all(torch.equal(same[k], theirs.model[k]) for k in same) and "fc8 included" in note
    with pytest.raises(TrainError, match=r"layer conv1 has shape \(96, 3, 11, 11\) there but \(96, 1, 11, 11\) in this "
                                         r"network: pass --in-channels 3\."):
        initial_weights(AlexNet(10, in_channels=1).state_dict(), theirs)


@pytest.fixture(scope="module")
def tiny3(module_tmp):
    from alexnet2gpu.data.synthetic import ensure_synthetic
    return ensure_synthetic(3, 2, 1, cache_dir=module_tmp("data3"), log=lambda *a: None)


@pytest.mark.slow
def test_fine_tune_ten_classes_to_three(checkpoint10, tiny3, tmp_path, capsys):
    """A new run (epoch 1, step 1) from a 10-class network's weights on 3 classes: every layer but fc8 starts
    from them, fc8 from the run's own initialisation; the banner says so."""
    args = ["--data", tiny3, "--init-from", checkpoint10, "--out", tmp_path, "--run-name", "ft", "--max-steps", "1",
            "--batch-size", "2", "--workers", "0", "--device", "cpu", "--lr", "1e-9", "--init", "caffe", "--pca",
            "none"]
    code = train.main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"fine-tuning from {checkpoint10}" in out and "fc8, which is drawn afresh for 3 classes" in out
    from alexnet2gpu.distributed.world import seed_all
    from alexnet2gpu.weights.checkpoint import load_checkpoint
    state = load_checkpoint(tmp_path / "ft")
    assert (state["epoch"], state["step"], len(state["metrics"])) == (1, 1, 1)
    source = load_weights(checkpoint10).model
    for name in source:
        if not name.startswith("fc8"):  # one step at lr 1e-9 moves nothing visibly
            torch.testing.assert_close(state["model"][name], source[name], rtol=0, atol=1e-6)
    seed_all(0)
    fresh = AlexNet(3, 3, "caffe").state_dict()
    torch.testing.assert_close(state["model"]["fc8.weight"], fresh["fc8.weight"], rtol=0, atol=1e-6)
    # a mismatch other than the classes, and --init-from with --resume, are one sentence each
    code = train.main([str(a) for a in args[:-2] + ["--in-channels", "1", "--pca", "none", "--run-name", "x"]])
    assert code == 1 and "layer conv1 has shape (96, 3, 11, 11) there" in capsys.readouterr().err
    code = train.main([str(a) for a in args + ["--resume", "auto"]])
    assert code == 1 and "pass one of them" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_reads_a_safetensors_file(checkpoint10, tiny3, tmp_path, capsys):
    """--evaluate takes the exported file as it takes the checkpoint, with the same errors."""
    ft = write_untrained_checkpoint(tmp_path / "run3", num_classes=3, classes=sorted(os.listdir(tiny3 / "train")))
    save_safetensors(load_weights(ft), tmp_path / "w.safetensors")
    common = ["--data", str(tiny3), "--workers", "0", "--device", "cpu"]
    assert train.main(["--evaluate", str(ft)] + common) == 0
    from_pt = [l.split(": ", 1)[1] for l in capsys.readouterr().out.splitlines() if "crop(s): top-1" in l]
    assert train.main(["--evaluate", str(tmp_path / "w.safetensors")] + common) == 0
    from_st = [l.split(": ", 1)[1] for l in capsys.readouterr().out.splitlines() if "crop(s): top-1" in l]
    assert len(from_pt) == 2 and from_st == from_pt
    other = write_untrained_checkpoint(tmp_path / "other", num_classes=3)  # classes c0, c1, c2
    save_safetensors(load_weights(other), tmp_path / "other.safetensors")
    assert train.main(["--evaluate", str(tmp_path / "other.safetensors")] + common) == 1
    assert "has other classes than checkpoint" in capsys.readouterr().err
