"""Start small gloo worlds for tests, the way torchrun would: one process per rank with RANK, WORLD_SIZE,
LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT set, so the code under test calls world.setup().

Processes come from a forkserver that imports torch once, so a world starts in a fraction of a second
rather than paying torch's import per rank. Each rank runs `fn(rank, *args)` with one thread; what it
returns comes back to the test; an exception in a rank comes back as its traceback text.
"""
from __future__ import annotations

import multiprocessing
import os
import pickle
import socket
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from . import ROOT

WORLD_TIMEOUT_S = 180  # a world that has not finished by then is hung: the test fails instead of CI


@dataclass
class RankResult:
    exitcode: int | None  # None: still running when the world was stopped
    value: object = None  # what fn returned
    error: str = ""  # the traceback of what fn raised


def _context():
    # Children must import this repository's package and the test modules (tests.*) whatever the working directory.
    paths = [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torch.distributed", "alexnet2gpu"])
    return ctx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(fn, rank: int, world_size: int, port: int, out: str, args: tuple) -> None:
    import torch
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        result = RankResult(0, value=fn(rank, *args))
    except BaseException:  # noqa: BLE001 - the test reports whatever a rank raised
        result = RankResult(1, error=traceback.format_exc())
    with open(os.path.join(out, f"{rank}.pkl"), "wb") as f:
        pickle.dump(result, f)
    sys.stdout.flush()
    os._exit(result.exitcode)  # skip interpreter teardown: a dead peer must not make a survivor hang on exit


def run_world(fn, world_size: int, *args, timeout_s: float = WORLD_TIMEOUT_S) -> list[RankResult]:
    """Run `fn(rank, *args)` on `world_size` ranks and return each rank's result, in rank order."""
    ctx = _context()
    port = free_port()
    with tempfile.TemporaryDirectory() as out:
        procs = [ctx.Process(target=_rank_main, args=(fn, r, world_size, port, out, args)) for r in range(world_size)]
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout_s
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        results = []
        for rank, p in enumerate(procs):
            if p.is_alive():
                p.kill()
                p.join()
                results.append(RankResult(None, error=f"rank {rank} still running after {timeout_s}s: killed"))
                continue
            path = Path(out) / f"{rank}.pkl"
            if path.exists():
                results.append(pickle.loads(path.read_bytes()))
            else:
                results.append(RankResult(p.exitcode, error=f"rank {rank} exited with {p.exitcode} and no result"))
        return results


def values(results: list[RankResult]) -> list:
    """The ranks' return values; fails with every rank's traceback when any rank failed."""
    failed = [f"--- rank {r}: {res.error}" for r, res in enumerate(results) if res.exitcode != 0]
    assert not failed, "a rank failed:\n" + "\n".join(failed)
    return [res.value for res in results]
