"""Checkpoints: atomic writes that survive a failing disk, pruning, best.pt, resume discovery, canonical
contents that load into another layout."""
import os

import pytest
import torch

from alexnet2gpu.errors import TrainError
from alexnet2gpu.model.layouts.merged import AlexNet
from alexnet2gpu.model.layouts.two_device import TwoTowerAlexNet
from alexnet2gpu.train.optim import load_momentum_buffers, make_optimizer, momentum_buffers
from alexnet2gpu.weights import checkpoint as ckpt


def test_a_failing_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    ckpt.write_checkpoint(tmp_path, {"w": torch.ones(3)}, epoch=1, is_best=True)
    real_save = torch.save

    def disk_full(obj, path):  # write half a file, then fail like a full disk
        real_save(obj, path)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(TrainError, match=r"No space left on device.*epoch_0001.pt is intact"):
        ckpt.write_checkpoint(tmp_path, {"w": torch.zeros(3)}, epoch=2, is_best=True)
    monkeypatch.undo()
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["best.pt", "epoch_0001.pt"]  # no temporary file, no half checkpoint
    for name in names:
        assert torch.equal(ckpt.load_checkpoint(tmp_path / "checkpoints" / name)["w"], torch.ones(3))


def test_keeps_the_last_few_and_the_best(tmp_path):
    for epoch, best in ((1, True), (2, False), (3, False), (4, False)):
        ckpt.write_checkpoint(tmp_path, {"e": epoch}, epoch, is_best=best, keep=2)
    assert [p.name for p in ckpt.epoch_files(tmp_path)] == ["epoch_0003.pt", "epoch_0004.pt"]
    assert ckpt.load_checkpoint(tmp_path / "checkpoints" / "best.pt")["e"] == 1  # survives pruning (hard link)
    assert ckpt.load_checkpoint(tmp_path)["e"] == 4  # a run folder means its latest checkpoint


def test_resume_auto_finds_the_newest_run(tmp_path):
    assert ckpt.latest_checkpoint(tmp_path) is None
    ckpt.write_checkpoint(tmp_path / "a", {}, 5, False)
    ckpt.write_checkpoint(tmp_path / "b", {}, 2, False)
    os.utime(ckpt.epoch_files(tmp_path / "a")[-1], (1, 1))  # run a is older
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "b" / "checkpoints" / "epoch_0002.pt"
    assert ckpt.run_dir_of(ckpt.latest_checkpoint(tmp_path)) == (tmp_path / "b").resolve()


def test_unreadable_checkpoints_get_a_message(tmp_path):
    with pytest.raises(TrainError, match="does not exist"):
        ckpt.load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrainError, match="could not be read"):
        ckpt.load_checkpoint(tmp_path / "junk.pt")
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(TrainError, match="not a train.py checkpoint"):
        ckpt.load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(TrainError, match="holds no checkpoints"):
        ckpt.load_checkpoint(tmp_path)


def test_canonical_weights_and_momentum_load_into_another_layout(tmp_path):
    """A merged-layout checkpoint restores the two-device layout's weights and momentum buffers exactly."""
    merged = AlexNet(num_classes=4, init="caffe")
    opt = make_optimizer(merged, lr=0.01)
    load_momentum_buffers(merged, opt, {n: torch.randn_like(p) for n, p in merged.named_parameters()})
    state = {"model": merged.state_dict(), "momentum": merged.to_canonical(momentum_buffers(merged, opt))}
    ckpt.write_checkpoint(tmp_path, state, 1, False)
    loaded = ckpt.load_checkpoint(tmp_path)
    two = TwoTowerAlexNet(num_classes=4, devices=("cpu", "cpu"))
    two.load_state_dict(loaded["model"])
    opt2 = make_optimizer(two, lr=0.01)
    load_momentum_buffers(two, opt2, two.from_canonical(loaded["momentum"]))
    back = two.to_canonical(momentum_buffers(two, opt2))
    for name, tensor in state["momentum"].items():
        assert torch.equal(back[name], tensor), name
    for name, tensor in state["model"].items():
        assert torch.equal(two.state_dict()[name], tensor), name
