"""Which mean a new run subtracts, where it comes from, and what it writes: a fine-tuning run (--init-from) keeps
its weights' mean and writes nothing into the data folder; --mean overrides it; a plain run computes the
training images' mean and caches it in the data folder, or says it cannot and goes on."""
import errno
import pathlib

import pytest

from alexnet2gpu.cli.train import build_config, parser
from alexnet2gpu.data import folders
from alexnet2gpu.data.folders import MEAN_FILE, CorruptLog, dataset_mean, open_folders
from alexnet2gpu.train.setup import make_context, plan_run
from alexnet2gpu.weights.checkpoint import load_checkpoint
from alexnet2gpu.weights.io import load_weights, save_safetensors
from tests.helpers.runs import TINY, run_main, tiny_data
from tests.helpers.weights import write_untrained_checkpoint

TRAINED_WITH = [120.0, 115.0, 100.0]  # the mean tests/helpers/weights.py writes into its checkpoints


@pytest.fixture(scope="module")
def weights(module_tmp):
    return write_untrained_checkpoint(module_tmp("run10"), num_classes=10)


def planned(*argv):
    """plan_run of a train.py command line: the mean and the banner's note, nothing built or trained."""
    cfg, given = build_config(parser().parse_args([str(a) for a in argv]))
    ctx = make_context(cfg)
    return plan_run(cfg, given, ctx, ctx.say)


@pytest.mark.slow
def test_fine_tuning_keeps_the_weights_mean_and_writes_nothing_beside_the_data(weights, tmp_path, capsys):
    data = tiny_data(tmp_path / "data")
    code, out, err = run_main(["--data", data, "--init-from", weights, "--out", tmp_path / "runs", "--run-name", "ft",
                               "--max-steps", "1", "--pca", "none", *TINY], capsys)
    assert code == 0, err
    assert f"input mean {TRAINED_WITH} from the weights, the one they were trained with (--mean R,G,B overrides it)" \
        in out
    assert "computing the per-channel training mean" not in out
    assert not (data / MEAN_FILE).exists()
    assert load_checkpoint(tmp_path / "runs" / "ft")["mean"] == TRAINED_WITH  # what a resume and predict then use


def test_mean_overrides_the_weights_mean(weights, tmp_path):
    data = tiny_data(tmp_path / "data")
    plan = planned("--data", data, "--init-from", weights, "--mean", "1,2,3", *TINY)
    assert plan.data.mean == [1.0, 2.0, 3.0]
    assert plan.init_note.splitlines()[-1] == ("input mean [1.0, 2.0, 3.0] from --mean; the weights were trained "
                                               f"with {TRAINED_WITH}")
    assert not (data / MEAN_FILE).exists()


def test_weights_without_a_mean_fine_tune_on_the_data_mean_and_say_so(weights, tmp_path):
    bare = load_weights(weights)
    bare.mean = None  # a .safetensors file another tool wrote may carry none
    save_safetensors(bare, tmp_path / "bare.safetensors")
    data = tiny_data(tmp_path / "data")
    plan = planned("--data", data, "--init-from", tmp_path / "bare.safetensors", *TINY)
    assert plan.data.mean != TRAINED_WITH and len(plan.data.mean) == 3
    assert plan.init_note.splitlines()[-1] == (f"input mean {[round(m, 2) for m in plan.data.mean]} computed from the "
                                               f"training images of {data}: the weights carry none")
    assert (data / MEAN_FILE).exists()  # computed as a plain run computes it, and cached as it is


def test_a_read_only_data_folder_gets_a_note_and_no_cache(tmp_path, monkeypatch):
    data = tiny_data(tmp_path / "data")
    real_write = pathlib.Path.write_text

    def read_only(path, *args, **kwargs):  # root writes through mode bits: fail as a read-only mount does
        if path.parent == data:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", read_only)
    lines = []
    splits = open_folders(data, None)
    mean = dataset_mean(data, splits.train, 3, 10000, 0, CorruptLog(0), log=lines.append)
    assert len(mean) == 3 and not (data / MEAN_FILE).exists()
    assert lines[-1] == (f"note: could not cache the mean in {data / MEAN_FILE} (Read-only file system); it will be "
                         "computed again next time")
    assert not list(data.glob("*.tmp"))
    assert folders.dataset_mean(data, splits.train, 3, 10000, 0, CorruptLog(0), log=lines.append) == mean
