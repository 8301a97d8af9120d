"""The training loop that never waits for the GPU: a non-finite loss still never updates the weights.

On CUDA (fused SGD) the check is deferred: a flag on the device turns the fused update of the bad step and
of every later one into a no-op, and the loop reads it at its log interval. Fused SGD runs on the CPU too,
so the deferred mode is checked here; the immediate mode (the CPU default) is tests/train/test_train.py's NaN test.
"""
import pytest
import torch

from alexnet2gpu.train.engine import FiniteGuard, NonFiniteLoss, train_step
from alexnet2gpu.train.optim import make_optimizer


def test_deferred_guard_freezes_the_weights_from_the_first_non_finite_loss():
    model = torch.nn.Linear(3, 4)
    optimizer = make_optimizer(model, lr=0.1, fused=True)
    guard = FiniteGuard(optimizer, torch.device("cpu"), immediate=False)
    x, y = torch.randn(8, 3), torch.randint(0, 4, (8,))
    after = {}
    for step in range(1, 5):
        images = x * float("nan") if step == 2 else x  # only step 2's batch is bad
        train_step(model, optimizer, images, y, guard=guard, step=step)
        after[step] = [p.detach().clone() for p in model.parameters()]
    assert not torch.equal(after[1][0], model.weight.detach() * 0)  # step 1 did update
    for step in (2, 3, 4):  # nothing moved after the bad step, though steps 3 and 4 had good batches
        assert all(torch.equal(a, b) for a, b in zip(after[1], after[step])), step
    with pytest.raises(NonFiniteLoss, match="became nan at step 2"):
        guard.check()


def test_deferred_guard_is_silent_while_losses_are_finite():
    model = torch.nn.Linear(3, 4)
    optimizer = make_optimizer(model, lr=0.1, fused=True)
    guard = FiniteGuard(optimizer, torch.device("cpu"), immediate=False)
    before = model.weight.detach().clone()
    train_step(model, optimizer, torch.randn(8, 3), torch.randint(0, 4, (8,)), guard=guard, step=1)
    guard.check()
    assert not torch.equal(before, model.weight.detach())


def test_a_deferred_guard_needs_a_fused_optimiser():
    model = torch.nn.Linear(3, 4)
    with pytest.raises(ValueError, match="fused optimiser"):
        FiniteGuard(make_optimizer(model, lr=0.1, fused=False), torch.device("cpu"), immediate=False)
    assert make_optimizer(model, lr=0.1).defaults["fused"] is None  # the CPU default: not fused
