"""Processes: the torchrun environment, process groups (data-parallel x tower), rank-0 output, faults.

Knows of AlexNet only its number of towers. A world of 2R processes is R tower pairs: ranks 2p and 2p+1 hold towers 0 and 1
of pair p (a row-major R x 2 mesh, pair x tower); the two ranks of a pair see the same batches, different
pairs see different samples, and each tower's gradients are averaged over its data-parallel group, the R
ranks holding that tower.

    ctx = setup(device="cuda", timeout_s=300)   # reads torchrun's RANK, WORLD_SIZE, LOCAL_RANK, ...
    with ctx.guard():                            # a lost peer becomes one clear PeerLost error
        ...
    teardown()
"""
from __future__ import annotations

import os
import random
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from .comm import on_backend
from .device import parse_device

RANK_DEVICES = "use 'cpu' or 'cuda' (each rank takes cuda:LOCAL_RANK)"  # what a rank's device may be
DEFAULT_TIMEOUT_S = 300.0  # how long a rank waits on a silent peer before it gives up


class PeerLost(RuntimeError):
    """Another rank died, hung or was stopped: this rank cannot go on."""


class Stopped(RuntimeError):
    """This rank stops because the main rank failed and reports why itself (so the cause is printed once)."""


class Printer:
    """print() where `on`, nothing elsewhere: `Context.say` is on for the main rank only, so each line is said
    once whatever the world's size. Progress bars and batch-job lines follow `on` too."""

    def __init__(self, on: bool = True, write=None):
        self.on, self.write = on, write

    def __call__(self, *args) -> None:
        if self.on:
            if self.write is None:
                print(*args, flush=True)  # flushed: under torchrun, lines appear as they happen, not at exit
            else:
                self.write(*args)


@dataclass
class Context:
    """Where this process stands. The defaults describe a single process holding both towers."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    towers: int = 2  # towers per pair (the network's: the world's ranks are pairs of them)
    tower: int | None = None  # the one tower this process holds; None when it holds both (merged, two-device)
    pair: int = 0  # which data-parallel replica (tower pair) this process belongs to
    num_pairs: int = 1
    tower_group: Any = None  # process group of the two towers of this pair
    dp_group: Any = None  # process group of this tower across all pairs
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where this rank computes
    backend: str = ""  # "nccl" or "gloo"; "" for a single process
    timeout_s: float = DEFAULT_TIMEOUT_S
    notes: list[str] = field(default_factory=list)  # choices made for the user, for the start banner

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def describe(self) -> str:
        """One line for the start banner."""
        if not self.distributed:
            return f"single process on {self.device}"
        text = (f"world {self.world_size} = {self.num_pairs} tower pair(s) x {self.towers} towers, backend {self.backend}, "
                f"timeout {self.timeout_s:g}s; rank {self.rank} = pair {self.pair} tower {self.tower} on {self.device}")
        return "; ".join([text] + self.notes)

    @property
    def say(self) -> "Printer":
        """The printer of lines for the user: print() on the main rank, silent on the others."""
        return Printer(self.is_main)

    def average_gradients(self, params) -> None:
        """Average each gradient over the data-parallel group (a no-op for one pair): one all-reduce of all
        gradients flattened together, since many small collectives cost more than one large one."""
        if self.num_pairs == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = self._sum_in_place(torch.cat([g.reshape(-1) for g in grads])).div_(self.num_pairs)
        for g, piece in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(piece.view_as(g))

    def sum_over_pairs(self, t: torch.Tensor) -> torch.Tensor:
        """`t` summed over the data-parallel group, in place (e.g. correct counts of each pair's samples)."""
        return self._sum_in_place(t) if self.num_pairs > 1 else t

    def _sum_in_place(self, t: torch.Tensor) -> torch.Tensor:
        staged = on_backend(t, self.dp_group)  # `t` itself unless the backend needs another device
        dist.all_reduce(staged, group=self.dp_group)
        if staged is not t:
            t.copy_(staged)
        return t

    def pair_seed(self, seed: int) -> int:
        """A seed the two towers of a pair share and other pairs do not: data order and augmentation."""
        return seed + 1_000_003 * self.pair

    def rank_seed(self, seed: int, epoch: int = 0) -> int:
        """A seed of this rank and epoch alone: dropout, once every rank has drawn the same initial weights.
        Reseeding each epoch from it makes a resumed run draw what an uninterrupted one would have."""
        return ((seed * 1_000_003 + epoch) * 1_000_003 + self.rank) % 2**63

    def on_main(self, fn):
        """fn() on the main rank while the others wait for it (e.g. for a checkpoint to be on disk). If it
        fails, the main rank raises the error and the others raise Stopped, so the cause is said once.
        Returns fn's result on the main rank, None on the others."""
        if not self.distributed:
            return fn()
        failure, result = None, None
        if self.is_main:
            try:
                result = fn()
            except Exception as error:  # noqa: BLE001 - re-raised below, after telling the others
                failure = error
        news = [None if failure is None else first_line(failure)]
        dist.broadcast_object_list(news, src=0)
        if failure is not None:
            raise failure
        if news[0] is not None:
            raise Stopped(f"rank {self.rank} stops: rank 0 failed ({news[0]})")
        return result

    def main_first(self, fn):
        """fn() on the main rank, then on the others: they find what it made (a data set, a cache)."""
        result = self.on_main(fn)
        return result if self.is_main else fn()

    @contextmanager
    def guard(self):
        """Turn a collective's failure (a peer died, hung past the timeout, or was stopped) into PeerLost."""
        try:
            yield
        except RuntimeError as error:
            if not self.distributed or isinstance(error, PeerLost) or not is_collective_failure(error):
                raise
            raise PeerLost(
                f"rank {self.rank} lost contact with another rank (it died, was stopped, or was silent for "
                f"{self.timeout_s:g}s): stopping; see the other ranks' output for the cause, and run under "
                f"torchrun --max-restarts=N to restart from the last checkpoint ({first_line(error)})"
            ) from error


def first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__


def is_collective_failure(error: BaseException) -> bool:
    """gloo raises plain RuntimeErrors ("Connection reset by peer", "Timed out waiting"); NCCL DistErrors."""
    text = str(error)
    return isinstance(error, dist.DistError) or any(
        word in text for word in ("gloo", "NCCL", "Connection", "Timed out", "timed out", "Socket"))


def seed_all(seed: int) -> None:
    """Seed Python, NumPy (when present) and torch alike on every rank, so all ranks draw the same weights."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy
        numpy.random.seed(seed % 2**32)
    except ImportError:
        pass


def _env_int(name: str, default: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None:
        if default is None:
            raise ValueError(f"environment variable {name} is not set: launch several processes with torchrun "
                             "(torchrun --standalone --nproc_per_node=2 train.py ...).")
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not a whole number: launch with torchrun.") from None


def _rank_device(device, local_rank: int, local_world: int, backend: str | None) -> tuple[torch.device, str, list[str]]:
    """This rank's device and backend: cuda:LOCAL_RANK with NCCL, or the CPU with gloo."""
    wanted = parse_device(device, RANK_DEVICES)
    if backend not in (None, "gloo", "nccl"):
        raise ValueError(f"unknown backend {backend!r}: choose 'nccl' (CUDA), 'gloo' (CPU, or ranks sharing a GPU) or None.")
    if wanted.type == "cpu":
        if backend == "nccl":
            raise ValueError("backend 'nccl' needs CUDA devices: pass device='cuda', or use gloo on the CPU.")
        return torch.device("cpu"), "gloo", []
    if wanted.type != "cuda":
        raise ValueError(f"device {device!r} is not supported across processes: use 'cpu' (gloo) or 'cuda' (NCCL).")
    if wanted.index is not None:
        raise ValueError(f"device {device!r} names one GPU, but each rank takes its own: pass device='cuda'.")
    count = torch.cuda.device_count()
    if count == 0:
        raise ValueError("device 'cuda' was asked for but this machine has no CUDA GPU: pass device='cpu'.")
    notes = []
    shared = local_world > count
    if shared:
        # NCCL refuses two ranks on one GPU ("Duplicate GPU detected"); gloo stages tensors through the host.
        if backend == "nccl":
            raise ValueError(f"{local_world} ranks on this node share {count} GPU(s) and NCCL refuses two ranks on "
                             "one GPU: start one rank per GPU, or let the backend default to gloo.")
        notes.append(f"{local_world} ranks share {count} GPU(s), so gloo (via host memory) replaces NCCL")
    return torch.device("cuda", local_rank % count), backend or ("gloo" if shared else "nccl"), notes


def _attempt_store(rank: int, world_size: int, timeout: timedelta):
    """The env:// store (torchrun's own), with keys private to this restart of the job.

    torchrun keeps one store for all restarts, so a restarted rank can read the address a dead rank of the
    previous attempt left there, and gloo's connect then fails with "Connection refused" (pytorch#135712).
    TORCHELASTIC_RESTART_COUNT numbers the restarts of one torchrun agent: every rank of a one-node job
    agrees on it. Across nodes it can differ; there, export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 too.
    """
    store, _, _ = next(dist.rendezvous("env://", rank=rank, world_size=world_size, timeout=timeout))
    return dist.PrefixStore(f"alexnet2gpu/attempt{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/", store)


def setup(device="cpu", timeout_s: float = DEFAULT_TIMEOUT_S, backend: str | None = None, towers: int = 2) -> Context:
    """Join the torchrun world (or stay a single process) and build the pair x tower process groups, `towers`
    ranks a pair (the network's tower count, model.layers.TOWERS: passed in, so the world needs no network).

    WORLD_SIZE unset or 1: returns the single-process Context (the caller then uses the merged layout).
    Otherwise needs RANK and LOCAL_RANK (LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT as torchrun sets them);
    every collective, and the start-up rendezvous, gives up after `timeout_s` seconds of silence.
    """
    if not isinstance(timeout_s, (int, float)) or timeout_s <= 0:
        raise ValueError(f"the collective timeout must be a positive number of seconds, got {timeout_s!r}.")
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size == 1:
        return Context(towers=towers, device=parse_device(device, RANK_DEVICES), timeout_s=float(timeout_s))
    if world_size % towers:
        raise ValueError(f"the tower-parallel layout needs a multiple of {towers} processes ({towers} towers per pair), "
                         f"got {world_size}: run {towers}, {2 * towers}, {3 * towers} ... processes, or 1 for the merged "
                         "layout.")
    rank, local_rank = _env_int("RANK"), _env_int("LOCAL_RANK")
    local_world = _env_int("LOCAL_WORLD_SIZE", world_size)
    local, backend, notes = _rank_device(device, local_rank, local_world, backend)
    if local.type == "cuda":
        torch.cuda.set_device(local)
    timeout = timedelta(seconds=timeout_s)
    dist.init_process_group(backend, store=_attempt_store(rank, world_size, timeout), rank=rank,
                            world_size=world_size, timeout=timeout)
    num_pairs = world_size // towers
    # Every rank creates every group, in the same order (torch.distributed.new_group's contract).
    tower_groups = [dist.new_group([towers * p + t for t in range(towers)], timeout=timeout) for p in range(num_pairs)]
    dp_groups = [dist.new_group(list(range(t, world_size, towers)), timeout=timeout) for t in range(towers)]
    pair, tower = divmod(rank, towers)
    return Context(rank=rank, world_size=world_size, local_rank=local_rank, towers=towers, tower=tower, pair=pair,
                   num_pairs=num_pairs, tower_group=tower_groups[pair], dp_group=dp_groups[tower], device=local,
                   backend=backend, timeout_s=float(timeout_s), notes=notes)


def teardown() -> None:
    """Leave the process group (safe to call when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
