"""The paper's update rule (incl. the velocity kept across an lr drop) and the learning-rate schedules."""
import pytest
import torch
from torch import nn

from alexnet2gpu.train.optim import (PlateauSchedule, StepSchedule, get_lr, load_momentum_buffers, make_optimizer,
                                     make_schedule, momentum_buffers, set_lr)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)


def test_update_rule_matches_the_paper_across_an_lr_drop():
    """v <- 0.9 v - 5e-4 lr w - lr g; w <- w + v, with v unchanged by an lr drop (paper §5).
    Without the momentum rescale in set_lr, the step after the drop would differ by a factor lr_old/lr_new
    in its momentum term."""
    torch.manual_seed(0)
    model = Tiny()
    opt = make_optimizer(model, lr=0.1, momentum=0.9, weight_decay=5e-4, bias_decay=True)
    w = {n: p.detach().clone() for n, p in model.named_parameters()}
    v = {n: torch.zeros_like(p) for n, p in w.items()}
    x, y = torch.randn(4, 3), torch.randint(0, 2, (4,))
    for step, lr in enumerate([0.1, 0.1, 0.01, 0.01]):
        if get_lr(opt) != lr:
            set_lr(opt, lr)
        loss = nn.functional.cross_entropy(model.fc(x), y)
        opt.zero_grad()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        opt.step()
        for n in w:  # the paper's rule by hand
            v[n] = 0.9 * v[n] - 5e-4 * lr * w[n] - lr * grads[n]
            w[n] = w[n] + v[n]
        for n, p in model.named_parameters():
            torch.testing.assert_close(p.detach(), w[n], rtol=1e-6, atol=1e-7, msg=f"step {step} {n}")


def test_weight_decay_on_weights_only_unless_asked():
    model = Tiny()
    groups = make_optimizer(model, lr=0.1, weight_decay=5e-4).param_groups
    assert [g["weight_decay"] for g in groups] == [5e-4, 0.0]
    assert groups[1]["params"][0] is model.fc.bias
    assert [g["weight_decay"] for g in make_optimizer(model, 0.1, bias_decay=True).param_groups] == [5e-4, 5e-4]


def test_momentum_buffers_round_trip():
    model = Tiny()
    opt = make_optimizer(model, lr=0.1)
    assert all((b == 0).all() for b in momentum_buffers(model, opt).values())  # before the first step
    bufs = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    load_momentum_buffers(model, opt, bufs)
    for n, b in momentum_buffers(model, opt).items():
        torch.testing.assert_close(b, bufs[n])


def test_plateau_divides_by_ten_at_most_three_times():
    s = PlateauSchedule(0.01, patience=2)
    lrs = [s.step(e, err) for e, err in enumerate([50, 40, 40, 40, 30, 30, 30] + [30] * 20, start=1)]
    assert lrs[:4] == [0.01, 0.01, 0.01, pytest.approx(0.001)]  # two epochs without improvement -> drop
    assert lrs[4] == pytest.approx(0.001)  # improvement resets the count
    assert min(lrs) == pytest.approx(1e-5) and s.drops == 3  # never more than three drops
    restored = PlateauSchedule(1.0)
    restored.load_state_dict(s.state_dict())
    assert restored.state_dict() == s.state_dict()


def test_step_schedule_and_bad_choices():
    s = StepSchedule(0.01, [2, 4])
    assert [s.step(e, 0) for e in range(1, 6)] == pytest.approx([0.01, 0.001, 0.001, 0.0001, 0.0001])
    with pytest.raises(ValueError, match="--lr-steps"):
        make_schedule("step", 0.01)
    with pytest.raises(ValueError, match="plateau or step"):
        make_schedule("cosine", 0.01)


def test_a_resumed_schedule_keeps_its_drops_and_takes_a_new_base_lr():
    """On resume the checkpoint's schedule goes on: its drops so far divide the base lr, the checkpoint's
    (whatever base the settings now give) or one given with --lr."""
    step = make_schedule("step", 0.01, milestones=[2, 3])
    step.step(1, 50.0), step.step(2, 50.0)
    resumed = make_schedule("step", 0.04, milestones=[2, 3])  # e.g. linear scaling at another batch size
    resumed.load_state_dict(step.state_dict())
    resumed.rebase(resumed.base(2), 2)
    assert resumed.lr == pytest.approx(0.001) and resumed.step(3, 50.0) == pytest.approx(0.0001)
    resumed.rebase(0.5, 2)  # --lr 0.5: after one drop
    assert resumed.lr == pytest.approx(0.05) and resumed.step(3, 50.0) == pytest.approx(0.005)
    plateau = make_schedule("plateau", 0.01, patience=1)
    plateau.step(1, 50.0), plateau.step(2, 50.0)
    assert (plateau.lr, plateau.dropped(2)) == (pytest.approx(0.001), 1)
    plateau.rebase(0.5, 2)
    assert plateau.lr == pytest.approx(0.05) and plateau.base(2) == pytest.approx(0.5)
