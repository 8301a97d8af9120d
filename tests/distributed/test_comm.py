"""Each exchange alone, forward and backward, with 2 gloo processes, against the single-process math.

Every tower feeds the exchange its own input and its own downstream weights (as each tower's cross layer
would), and the expectation is computed here in one process from both towers' tensors. A mismatch in a
gradient by a factor of 2 means a replicated path was summed; a gradient that only holds this tower's own
downstream weights means the reduce-scatter was left out.
"""
from __future__ import annotations

import pytest
import torch

from alexnet2gpu.distributed.comm import (broadcast_from_first, gather_from_towers, gather_rows, gather_to_first_tower,
                                          share_from_first_tower)
from tests.helpers.worlds import run_world, values

SHAPE = (2, 3, 4, 4)  # N x C x H x W per tower


def tensor(seed: int, shape=SHAPE) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def leaf(seed: int, shape=SHAPE) -> torch.Tensor:
    return tensor(seed, shape).requires_grad_()


def exchanges(rank: int) -> dict:
    """Run every exchange on this rank of a 2-process world; return what this rank saw."""
    from alexnet2gpu.distributed import world
    ctx = world.setup("cpu", timeout_s=60)
    group, tower = ctx.tower_group, ctx.tower
    out = {}

    # gather_from_towers: each tower's "cross layer" reads the gathered maps with its own weights.
    x = leaf(tower)
    y = gather_from_towers(x, group)
    (y * tensor(10 + tower, y.shape)).sum().backward()
    out["gather"], out["gather.grad"] = y.detach(), x.grad

    # gather_to_first_tower alone: tower 0 reads the gathered maps; tower 1's own output gets no gradient.
    x = leaf(tower)
    y = gather_to_first_tower(x, group)
    if tower == 0:
        (y * tensor(20, y.shape)).sum().backward()
    else:
        y.backward(torch.zeros_like(y))
    out["to_first"], out["to_first.grad"] = y.detach(), x.grad

    # share_from_first_tower alone: both towers compute the same loss from the shared tensor.
    y0, token = leaf(30, (2, 5)), leaf(31, (2, 7))
    shared = share_from_first_tower(y0 if tower == 0 else token, group, (2, 5))
    (shared * tensor(32, (2, 5))).sum().backward()
    out["share"], out["share.grad"] = shared.detach(), (y0 if tower == 0 else token).grad

    # The fc8 step as the model uses it: gather to tower 0, a linear layer there, logits shared.
    x, weight = leaf(tower), leaf(40, (2 * 3 * 4 * 4, 5))
    h = gather_to_first_tower(x, group)
    logits = h.flatten(1) @ weight if tower == 0 else h
    logits = share_from_first_tower(logits, group, (2, 5))
    (logits * tensor(41, (2, 5))).sum().backward()
    out["fc8"], out["fc8.grad"], out["fc8.weight.grad"] = logits.detach(), x.grad, weight.grad

    # No autograd: rows gathered in tower order, and tower 0's tensor broadcast.
    out["rows"] = gather_rows(tensor(50 + tower, (3, 2)), group)
    like = torch.empty(4, dtype=torch.float64)
    out["broadcast"] = broadcast_from_first(tensor(60, (4,)) if tower == 0 else None, group, like)
    world.teardown()
    return out


@pytest.fixture(scope="module")
def seen() -> list[dict]:
    return values(run_world(exchanges, 2))


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_gather_from_towers_concatenates_and_sums_gradients(seen):
    both = torch.cat([tensor(0), tensor(1)], dim=1)
    downstream = tensor(10, both.shape) + tensor(11, both.shape)  # both towers' cross layers read every map
    for tower in (0, 1):
        close(seen[tower]["gather"], both)
        close(seen[tower]["gather.grad"], downstream.chunk(2, dim=1)[tower])


def test_gather_to_first_tower_scatters_the_gradient(seen):
    close(seen[0]["to_first"], torch.cat([tensor(0), tensor(1)], dim=1))
    close(seen[1]["to_first"], tensor(1))  # tower 1 keeps its own maps: it only carries the graph
    for tower in (0, 1):
        close(seen[tower]["to_first.grad"], tensor(20, (2, 6, 4, 4)).chunk(2, dim=1)[tower])


def test_share_from_first_tower_gradient_is_not_doubled(seen):
    for tower in (0, 1):
        close(seen[tower]["share"], tensor(30, (2, 5)))
    close(seen[0]["share.grad"], tensor(32, (2, 5)))  # once, though both towers computed the loss
    close(seen[1]["share.grad"], torch.zeros(2, 7, dtype=torch.float64))


def test_fc8_step_matches_one_process(seen):
    x = torch.cat([leaf(0), leaf(1)], dim=1).detach().requires_grad_()
    weight = leaf(40, (96, 5))
    logits = x.flatten(1) @ weight
    (logits * tensor(41, (2, 5))).sum().backward()
    for tower in (0, 1):
        close(seen[tower]["fc8"], logits.detach())
        close(seen[tower]["fc8.grad"], x.grad.chunk(2, dim=1)[tower])
    close(seen[0]["fc8.weight.grad"], weight.grad)


def test_rows_and_broadcast_for_weights(seen):
    for tower in (0, 1):
        close(seen[tower]["rows"], torch.cat([tensor(50, (3, 2)), tensor(51, (3, 2))]))
        close(seen[tower]["broadcast"], tensor(60, (4,)))


def test_a_world_of_one_is_the_identity():
    x = leaf(0)
    for exchange in (gather_from_towers, gather_to_first_tower):
        assert exchange(x, None) is x
    assert share_from_first_tower(x, None, SHAPE) is x
