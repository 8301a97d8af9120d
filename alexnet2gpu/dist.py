"""Processes: the torchrun environment, process groups (data-parallel x tower), rank-0 output.

Knows nothing of AlexNet. A world of 2R processes is R tower pairs: ranks 2p and 2p+1 hold towers 0 and 1
of pair p; the two ranks of a pair see the same batches, different pairs see different samples.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Context:
    """Where this process stands. The defaults describe a single process holding both towers."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    tower: int | None = None  # the one tower this process holds; None when it holds both (merged, two-device)
    pair: int = 0  # which data-parallel replica (tower pair) this process belongs to
    num_pairs: int = 1
    tower_group: Any = None  # process group of the two towers of this pair
    dp_group: Any = None  # process group of this tower across all pairs

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def average_gradients(self, params) -> None:
        """Average each gradient over the data-parallel group (a no-op for one pair)."""
        if self.num_pairs == 1:
            return
        for p in params:
            if p.grad is not None:
                torch.distributed.all_reduce(p.grad, group=self.dp_group)
                p.grad.div_(self.num_pairs)
