"""A run's loaders (run_data.run_loaders): built once, their worker processes started at the first epoch
and kept to the end, each epoch still giving exactly the batches a loader built for it alone gives."""
import multiprocessing.process

import pytest
import torch

from alexnet2gpu.data.device_input import InputSpec
from alexnet2gpu.data.folders import open_folders
from alexnet2gpu.data.gpu.loader import DecodedLoader
from alexnet2gpu.data.prefetch import ThreadClock
from alexnet2gpu.data.synthetic import ensure_synthetic
from alexnet2gpu.distributed.world import Context
from alexnet2gpu.train.config import Config
from alexnet2gpu.train.loaders import run_loaders


@pytest.fixture
def started(monkeypatch) -> list:
    """Every process started from here on (a loader's workers are such processes)."""
    processes, real = [], multiprocessing.process.BaseProcess.start

    def start(self):
        real(self)
        processes.append(self)

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", start)
    return processes


def contents(batches) -> list:
    return [(b.images, b.alphas, b.targets, b.paths) for b in batches]


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) and torch.equal(x[2], y[2])
                                    and x[3] == y[3] for x, y in zip(a, b))


def test_persistent_workers_start_once_and_each_epoch_gets_its_own_batches(tmp_path, started):
    root = ensure_synthetic(2, 3, 1, cache_dir=tmp_path, log=lambda *a: None)
    splits = open_folders(root, None)
    cfg = Config(batch_size=2, workers=1)
    loaders = run_loaders(cfg, splits, Context(), persistent=True)
    fresh = lambda epoch: run_loaders(Config(batch_size=2, workers=0), splits, Context()).for_epoch(epoch)
    try:
        next(iter(loaders.for_epoch(1).train))  # left mid-epoch, as --max-steps leaves it: the next pass starts anew
        epochs = []
        for epoch in (1, 2, 3):
            got = contents(loaders.for_epoch(epoch).train)
            assert same(got, contents(fresh(epoch).train)), epoch
            assert same(contents(loaders.val), contents(fresh(epoch).val)), epoch
            epochs.append(got)
        assert not same(epochs[0], epochs[1])  # the epoch did move on: another order and other crops
        assert len(started) == 2  # one worker for train, one for val, over four passes of each
        assert all(p.is_alive() for p in started)
    finally:
        loaders.close()
    assert not any(p.is_alive() for p in started)  # closed now, not when the loaders are collected
    loaders.close()  # twice is harmless


def test_the_gpu_data_path_decodes_each_epoch_through_the_same_workers(tmp_path, started):
    """--decode gpu's loop (decoded_loader.DecodedLoader, here on the CPU) over persistent loaders: each epoch's
    batches are a fresh loader's, and its decoding thread's clock, which adds up over the epochs, gives
    each epoch's own share (train.py's note after each epoch)."""
    root = ensure_synthetic(2, 3, 1, cache_dir=tmp_path, log=lambda *a: None)
    splits = open_folders(root, None)
    spec = InputSpec(torch.device("cpu"), torch.zeros(3))
    decoded = lambda loader: DecodedLoader(loader, spec.decode, torch.device("cpu"), files=spec.decode_files)
    loaders = run_loaders(Config(batch_size=2, workers=1), splits, Context(), decode="gpu", persistent=True)
    train, passes = decoded(loaders.train), []
    try:
        for epoch in (1, 2):
            before = ThreadClock(train.clock.waiting, train.clock.making)
            fresh = run_loaders(Config(batch_size=2, workers=0), splits, Context(), decode="gpu").for_epoch(epoch)
            loaders.for_epoch(epoch)
            assert same(contents(train), contents(decoded(fresh.train))), epoch
            passes.append(train.clock.since(before))
        assert all(p.making > 0 for p in passes)
        assert sum(p.making for p in passes) == pytest.approx(train.clock.making)
        assert len(started) == 1
    finally:
        loaders.close()
    assert not any(p.is_alive() for p in started)

