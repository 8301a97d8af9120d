"""`torchrun train.py` for real, on the CPU with gloo: 2 ranks (one tower pair) and 4 ranks (two pairs) write
the merged layout's checkpoint; a 4-rank checkpoint resumes at 2 ranks and in the merged layout; a rank killed
mid-run stops the job with a message (and, under --max-restarts, the job resumes and ends where an
uninterrupted run ends); an odd world size is one sentence.

The built-in set at its smallest: 2 classes x 2 training images, so an epoch is one step at effective batch 4,
and 1 validation image per class. Dropout is off so every layout computes the same function.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from alexnet2gpu.cli import train
from alexnet2gpu.data.folders import open_folders
from alexnet2gpu.data.synthetic import ensure_synthetic
from alexnet2gpu.distributed.world import Context
from alexnet2gpu.train.config import Config, resume_config
from alexnet2gpu.train.loaders import run_loaders
from alexnet2gpu.weights.checkpoint import load_checkpoint
from tests.helpers import ROOT
from tests.helpers.child_env import child_env
from tests.helpers.parity import assert_near

TINY = ["--device", "cpu", "--num-classes", "2", "--train-per-class", "2", "--val-per-class", "1", "--workers", "0", "--dropout", "0",
        "--init", "caffe", "--dist-timeout", "60"]
HANG_GUARD_S = 240  # a job still running by then hangs: the test fails instead of CI


def torchrun(ranks: int, args, cache: Path, *launcher, kill: str | None = None) -> tuple[int, str]:
    """train.py under torchrun; kill="RANK:STEP" runs it with that rank killed before that step (first
    attempt only, tests/train_with_a_fault.py)."""
    env = child_env(OMP_NUM_THREADS="1", ALEXNET2GPU_CACHE=str(cache))
    script = [str(ROOT / "train.py")] if kill is None else [str(ROOT / "tests" / "helpers" / "train_with_a_fault.py"), kill]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", *launcher,
               *script, *TINY, *[str(a) for a in args]]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    return done.returncode, done.stdout + done.stderr


def merged(args, cache: Path, capsys) -> tuple[int, str]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALEXNET2GPU_CACHE", str(cache))
        code = train.main(TINY + [str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out + out.err


def checkpoint(out: Path, epoch: int) -> dict:
    return load_checkpoint(next(out.glob(f"*/checkpoints/epoch_{epoch:04d}.pt")))


def assert_same_checkpoint(got: dict, want: dict, what: str) -> None:
    for part in ("model", "momentum"):
        assert got[part].keys() == want[part].keys()
        for name in want[part]:
            assert_near(got[part][name], want[part][name], f"{what}: {part} {name}")


@pytest.fixture(scope="module")
def runs(module_tmp):
    """One epoch (one step at effective batch 4) in three process layouts; the 2-rank run goes on to epoch 2."""
    tmp = module_tmp("torchrun")
    cache = tmp / "cache"
    result = {"tmp": tmp, "cache": cache}
    # First: the main rank generates the built-in set and its mean while the other waits (Context.main_first).
    result["two"] = torchrun(2, ["--batch-size", 4, "--epochs", 2, "--keep", 2, "--out", tmp / "two"], cache)
    result["four"] = torchrun(4, ["--batch-size", 2, "--epochs", 1, "--keep", 1, "--out", tmp / "four"], cache)
    return result


@pytest.mark.slow
def test_two_and_four_ranks_write_the_merged_layouts_checkpoint(runs, capsys, tmp_path):
    """Pair p takes every R-th sample of the epoch's permutation, so 2 pairs at batch 2 see, together, the
    merged layout's batch of 4, and their averaged gradient is its gradient. A mismatch in fc8 only points
    at the gathers to tower 0; a factor of 2 everywhere at the gradient average; in all tensors at the data."""
    tmp, cache = runs["tmp"], runs["cache"]
    code, out = merged(["--batch-size", 4, "--epochs", 1, "--keep", 1, "--out", tmp_path / "merged"], cache, capsys)
    assert code == 0, out
    want = checkpoint(tmp_path / "merged", 1)
    for ranks, key, pairs, per_pair in ((2, "two", 1, 4), (4, "four", 2, 2)):
        code, out = runs[key]
        assert code == 0, out[-3000:]
        assert out.count("config:") == 1, "only rank 0 prints"
        assert f"world {ranks} = {pairs} tower pair(s) x 2 towers, backend gloo, timeout 60s" in out
        assert f"effective batch 4 ({per_pair} per tower pair x {pairs}); lr 0.01 as given" in out
        got = checkpoint(tmp / key, 1)
        assert (got["step"], got["num_pairs"], got["world_size"]) == (1, pairs, ranks)
        assert_same_checkpoint(got, want, f"{ranks} ranks vs merged")
        assert got["metrics"][0]["train_loss"] == pytest.approx(want["metrics"][0]["train_loss"], rel=1e-6)


@pytest.mark.slow
def test_a_four_rank_checkpoint_resumes_at_two_ranks_and_in_the_merged_layout(runs, capsys, tmp_path):
    """The checkpoint is canonical whatever wrote it: weights and momentum go on in another world size. Both
    resumed runs take one more step (batch 2 per pair, now one pair) from the same state and must agree."""
    tmp, cache = runs["tmp"], runs["cache"]
    assert runs["four"][0] == 0, runs["four"][1][-3000:]
    source = next((tmp / "four").glob("*/checkpoints/epoch_0001.pt"))
    resumed = {}
    for where in ("at2", "merged"):
        folder = tmp_path / "resume" / where / "run" / "checkpoints"
        folder.mkdir(parents=True)
        shutil.copy(source, folder / "epoch_0001.pt")
        args = ["--resume", folder / "epoch_0001.pt", "--epochs", 2, "--max-steps", 1,
                "--out", tmp_path / "resume" / where]
        code, out = torchrun(2, args, cache) if where == "at2" else merged(args + ["--layout", "merged"], cache, capsys)
        assert code == 0, out[-3000:]
        assert "resuming from" in out and "written by 2 tower pair(s), now 1: the effective batch becomes 2" in out
        state = checkpoint(tmp_path / "resume" / where, 2)
        assert state["step"] == 2 and [r["epoch"] for r in state["metrics"]] == [1, 2]
        assert all(0 < r["train_loss"] < 10 and 0 <= r["val_top1_error"] <= 100 for r in state["metrics"])
        resumed[where] = state
    assert_same_checkpoint(resumed["at2"], resumed["merged"], "resumed at 2 ranks vs merged")


@pytest.mark.slow
def test_a_killed_rank_stops_the_job_with_a_message(runs, tmp_path):
    """Rank 1 dies (SIGKILL, via the test hook) at step 2: the survivor stops at once, well within
    --dist-timeout, instead of hanging; epoch 1's checkpoint was on disk before any rank went on."""
    code, out = torchrun(2, ["--batch-size", 4, "--epochs", 2, "--out", tmp_path / "killed"], runs["cache"],
                         kill="1:2")
    assert code != 0
    assert "rank 0 lost contact with another rank" in out or "train.py: stopped by SIGTERM" in out, out[-3000:]
    assert "exitcode  : -9" in out and "SIGKILL" in out  # torchrun's own summary names the dead rank
    assert sorted(p.name for p in (tmp_path / "killed").glob("*/checkpoints/*")) == ["best.pt", "epoch_0001.pt"]


@pytest.mark.slow
def test_max_restarts_resumes_from_the_last_checkpoint_and_ends_like_an_uninterrupted_run(runs, tmp_path):
    tmp = runs["tmp"]
    code, out = torchrun(2, ["--batch-size", 4, "--epochs", 2, "--keep", 2, "--out", tmp_path / "restarted", "--resume",
                             "auto"], runs["cache"], "--max-restarts=1", kill="1:2")
    assert code == 0, out[-3000:]
    assert "resuming from" in out and "epoch_0001.pt (epoch 1 done)" in out
    whole, restarted = checkpoint(tmp / "two", 2), checkpoint(tmp_path / "restarted", 2)
    timings = ("images_per_s", "seconds", "loader_images_per_s", "step_images_per_s")
    assert [{k: v for k, v in row.items() if k not in timings} for row in restarted["metrics"]] == \
        [{k: v for k, v in row.items() if k not in timings} for row in whole["metrics"]]
    for part in ("model", "momentum"):
        for name, value in whole[part].items():
            assert torch.equal(restarted[part][name], value), f"{part} {name}"


@pytest.mark.slow
def test_an_odd_world_size_is_one_sentence(tmp_path):
    code, out = torchrun(3, ["--out", tmp_path], tmp_path / "cache")
    assert code != 0
    assert out.count("train.py: error:") == 1 and "needs a multiple of 2 processes (2 towers per pair)" in out, out[-3000:]
    assert 'train.py", line' not in out and "alexnet2gpu/" not in out  # no rank's traceback (torchrun prints its own)


def test_the_ranks_of_a_pair_see_identical_batches_and_the_pairs_split_each_epoch(tmp_path):
    """Through the trainer's own loaders: both ranks of a pair (here with different worker counts) get
    bit-identical uint8 crops, PCA alphas and labels; the two pairs' k-th batches of 3 are together the
    merged layout's k-th batch of 6 (so their averaged gradient is its gradient), and each epoch covers
    every sample exactly once."""
    root = ensure_synthetic(3, 4, 1, cache_dir=tmp_path, log=lambda *a: None)
    splits = open_folders(root, None)

    def loader(pair: int, num_pairs: int, batch: int, workers: int, epoch: int):
        cfg = Config(batch_size=batch, workers=workers)
        return run_loaders(cfg, splits, Context(pair=pair, num_pairs=num_pairs)).for_epoch(epoch).train

    def chunks(indices: list[int], size: int) -> list[list[int]]:
        return [indices[i:i + size] for i in range(0, len(indices), size)]

    for epoch in (1, 2):
        tower0, tower1 = list(loader(1, 2, 3, 0, epoch)), list(loader(1, 2, 3, 1, epoch))
        assert len(tower0) == 2
        for a, b in zip(tower0, tower1, strict=True):
            assert torch.equal(a.images, b.images) and torch.equal(a.alphas, b.alphas)
            assert torch.equal(a.targets, b.targets)
        shares = [loader(p, 2, 3, 0, epoch).sampler.indices() for p in range(2)]
        whole = loader(0, 1, 6, 0, epoch).sampler.indices()
        assert sorted(shares[0] + shares[1]) == list(range(len(splits.train))) == sorted(whole)
        for k, batch in enumerate(chunks(whole, 6)):
            assert sorted(chunks(shares[0], 3)[k] + chunks(shares[1], 3)[k]) == sorted(batch)
        # ... and the same augmented crops: augmentation follows the sample, not the pair that loads it
        pair0, merged_batches = list(loader(0, 2, 3, 0, epoch)), list(loader(0, 1, 6, 0, epoch))
        for k, batch in enumerate(merged_batches):
            crops = torch.cat([pair0[k].images, tower0[k].images]).flatten(1).numpy()
            assert sorted(map(bytes, crops)) == sorted(map(bytes, batch.images.flatten(1).numpy()))


def test_a_resumed_run_chooses_its_placement_afresh():
    """A checkpoint loads into any layout, so resuming under torchrun needs no flag to undo `--layout
    two-device` (and a torchrun run resumes in one process): placement is not inherited, the recipe is."""
    saved = asdict(Config(layout="two-device", device="cuda:1", devices=["cuda:0", "cuda:1"], epochs=5, lr=0.02))
    cfg = resume_config(saved, {"epochs": 9})
    assert (cfg.layout, cfg.device, cfg.devices, cfg.epochs, cfg.lr) == ("auto", "auto", None, 9, 0.02)
    assert resume_config(saved, {"layout": "merged"}).layout == "merged"
