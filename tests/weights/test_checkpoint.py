"""Checkpoints: atomic writes that survive a failing disk, pruning, best.pt, resume discovery, canonical
contents that load into another layout, and damaged files refused in one sentence."""
import os

import pytest
import torch

from alexnet2gpu.errors import TrainError
from alexnet2gpu.model.layouts.merged import AlexNet
from alexnet2gpu.model.layouts.two_device import TwoTowerAlexNet
from alexnet2gpu.train.optim import load_momentum_buffers, make_optimizer, momentum_buffers
from alexnet2gpu.weights import checkpoint as ckpt
from tests.helpers.weights import flip_bytes


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


def test_unreadable_checkpoints_get_a_message(tmp_path):
    with pytest.raises(TrainError, match="does not exist"):
        ckpt.load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrainError, match="could not be read"):
        ckpt.load_checkpoint(tmp_path / "junk.pt")
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(TrainError, match="not a train.py checkpoint"):
        ckpt.load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(TrainError, match=r"holds no checkpoints: it has no checkpoints/ folder"):
        ckpt.load_checkpoint(tmp_path)


def test_a_checkpoint_with_flipped_bytes_is_refused_naming_the_entry(tmp_path):
    """torch.load reads such a file without complaint (the weights come out wrong); the zip's CRC-32s do not."""
    ckpt.write_checkpoint(tmp_path, {"w": torch.randn(100_000)}, epoch=1, is_best=True)
    best = tmp_path / "checkpoints" / "best.pt"
    entry = flip_bytes(best)
    with pytest.raises(TrainError, match=rf"^{best} is damaged \(a CRC check fails in {entry}\): restore it from a "
                                         r"copy, or use another checkpoint\.$"):
        ckpt.load_checkpoint(best)
    with pytest.raises(TrainError, match=r"epoch_0001.pt is damaged \(a CRC check fails"):
        ckpt.load_checkpoint(tmp_path)  # best.pt is a hard link to it: the same bytes
    cut = tmp_path / "cut.pt"
    cut.write_bytes(best.read_bytes()[:-100])
    with pytest.raises(TrainError, match=r"cut.pt is damaged \(it is cut short or its zip directory is garbled\)"):
        ckpt.load_checkpoint(cut)


def test_an_empty_checkpoint_is_one_sentence(tmp_path):
    (tmp_path / "empty.pt").touch()
    with pytest.raises(TrainError, match=r"empty.pt is empty \(0 bytes\): restore it from a copy, or use another"):
        ckpt.load_checkpoint(tmp_path / "empty.pt")


def test_a_run_folder_without_epoch_checkpoints_loads_its_best(tmp_path):
    run = tmp_path / "run"
    ckpt.write_checkpoint(run, {"e": 3}, epoch=3, is_best=True)
    (run / "checkpoints" / "epoch_0003.pt").unlink()  # best.pt alone is left
    for folder in (run, run / "checkpoints"):
        state = ckpt.load_checkpoint(folder)
        assert state["e"] == 3 and state["path"] == str(run / "checkpoints" / "best.pt")
    assert ckpt.latest_checkpoint(tmp_path) == run / "checkpoints" / "best.pt"  # --resume auto
    (run / "checkpoints" / "best.pt").rename(run / "checkpoints" / "final.pt")
    with pytest.raises(TrainError, match=r"holds no checkpoints: .*checkpoints holds final.pt but no epoch_NNNN.pt "
                                         r"or best.pt; pass the checkpoint file itself"):
        ckpt.load_checkpoint(run)
    assert ckpt.latest_checkpoint(tmp_path) is None


def test_the_next_write_removes_a_killed_writes_temporary_files(tmp_path):
    """kill -9 during torch.save leaves epoch_NNNN.pt.tmp (no clean-up runs); the next write removes it, and
    only the names the writer itself uses."""
    ckpt.write_checkpoint(tmp_path, {"e": 1}, epoch=1, is_best=True)
    folder = tmp_path / "checkpoints"
    for name in ("epoch_0002.pt.tmp", "best.pt.tmp", "notes.pt.tmp", "epoch_0002.pt.tmp.mine", "my_epoch_2.pt.tmp"):
        (folder / name).write_bytes(b"PK\x03\x04 half a checkpoint")
    ckpt.write_checkpoint(tmp_path, {"e": 3}, epoch=3, is_best=False)
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt", "epoch_0001.pt", "epoch_0002.pt.tmp.mine",
                                                        "epoch_0003.pt", "my_epoch_2.pt.tmp", "notes.pt.tmp"]


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
