"""A damaged or empty checkpoint is refused in one sentence by everything that reads weights: predict, export,
the hub entry and train.py --resume, --evaluate and --init-from (each reads it through io.load_weights or
checkpoint.load_checkpoint)."""
import re

import pytest
import torch

from alexnet2gpu.errors import TrainError
from alexnet2gpu.weights import checkpoint as ckpt
from alexnet2gpu.weights import export, predict
from alexnet2gpu.weights.hub import load_network
from tests.helpers.weights import flip_bytes, train

DAMAGES = {
    "flipped": r"is damaged \(a CRC check fails in data/\d+\): restore it from a copy, or use another checkpoint\.",
    "empty": r"is empty \(0 bytes\): restore it from a copy, or use another checkpoint\.",
}


@pytest.fixture(scope="module")
def damaged(module_tmp):
    """One file per damage: a train.py checkpoint (small: the loaders refuse it before using the weights)."""
    files = {}
    for name in DAMAGES:
        run = module_tmp(name)
        files[name] = ckpt.write_checkpoint(run, {"model": {"w": torch.randn(50_000)}}, epoch=1, is_best=False)
    flip_bytes(files["flipped"])
    files["empty"].write_bytes(b"")
    return files


@pytest.fixture(scope="module")
def data(module_tmp):
    from alexnet2gpu.data.synthetic import ensure_synthetic
    return ensure_synthetic(2, 2, 1, cache_dir=module_tmp("data"), log=lambda *a: None)


def one_sentence(err: str, pattern: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(pattern, lines[0]), lines[0]


@pytest.mark.parametrize("damage", DAMAGES)
def test_predict_export_and_the_hub_refuse_it(damage, damaged, tmp_path, capsys):
    path = damaged[damage]
    (tmp_path / "a.jpg").write_bytes(b"")
    assert predict.main([str(path), str(tmp_path / "a.jpg")]) == 1
    one_sentence(capsys.readouterr().err, "predict: error: .*" + DAMAGES[damage])
    for suffix in export.FORMATS:
        assert export.main([str(path), str(tmp_path / f"w{suffix}")]) == 1
        one_sentence(capsys.readouterr().err, "export: error: .*" + DAMAGES[damage])
    assert not list(tmp_path.glob("w.*"))
    with pytest.raises(TrainError, match=DAMAGES[damage]):
        load_network(str(path))
    with pytest.raises(TrainError, match=DAMAGES[damage]):
        load_network(str(path.parent.parent))  # the run folder: its latest checkpoint


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("flag", ["--resume", "--evaluate", "--init-from"])
def test_train_refuses_it(flag, damage, damaged, data, tmp_path, capsys):
    args = [flag, str(damaged[damage]), "--data", str(data), "--out", str(tmp_path), "--workers", "0", "--device",
            "cpu", "--pca", "none"]
    assert train.main(args) == 1
    one_sentence(capsys.readouterr().err, "train.py: error: .*" + DAMAGES[damage])
    assert not list(tmp_path.iterdir())  # no run folder was started
