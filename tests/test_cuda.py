"""On a GPU: the CUDA defaults (fused Triton ReLU+LRN, cuDNN, bf16, the deferred non-finite check) against
the float64 CPU oracle. Skipped without CUDA: the CPU suite checks the same maths with the kernels interpreted.

Tolerances are relative errors (norm of the difference over the norm of the reference): cuDNN's fp32
convolutions use TF32 (10-bit mantissa inputs, about 1e-3), bf16 about 1e-2.
"""
import pytest
import torch

from alexnet2gpu import AlexNet, TwoTowerAlexNet
from alexnet2gpu.engine import FiniteGuard, NonFiniteLoss, train_step
from alexnet2gpu.lrn_op import relu_lrn
from alexnet2gpu.optim import make_optimizer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def relative_error(got, want) -> float:
    return ((got.double().cpu() - want.double().cpu()).norm() / want.double().cpu().norm()).item()


def logits_and_grads(model, x):
    model.zero_grad(set_to_none=True)
    logits = model(x)
    logits.float().square().mean().backward()
    return logits.detach(), model.to_canonical({n: p.grad.detach().cpu() for n, p in model.named_parameters()})


@pytest.fixture(scope="module")
def oracle():
    torch.manual_seed(0)
    cpu = AlexNet(num_classes=10, dropout=0.0).double()
    x = torch.randn(4, 3, 224, 224, dtype=torch.float64) * 60
    return cpu.state_dict(), x, logits_and_grads(cpu, x)


@pytest.mark.parametrize("amp,tolerance", [(None, 5e-3), (torch.bfloat16, 5e-2)])
def test_merged_on_cuda_matches_the_float64_oracle(oracle, amp, tolerance):
    weights, x, (want, want_grads) = oracle
    model = AlexNet(num_classes=10, dropout=0.0).cuda()
    model.load_state_dict(weights)
    with torch.autocast("cuda", dtype=amp or torch.float32, enabled=amp is not None):
        got, grads = logits_and_grads(model, x.float().cuda())
    assert relative_error(got, want) < tolerance
    for name, g in grads.items():
        assert relative_error(g, want_grads[name]) < 4 * tolerance, name


def test_two_device_on_one_gpu_matches_merged(oracle):
    weights, x, (want, want_grads) = oracle
    model = TwoTowerAlexNet(num_classes=10, dropout=0.0, devices=("cuda:0", "cuda:0"))
    model.load_state_dict(weights)
    got, grads = logits_and_grads(model, x.float().cuda())
    assert relative_error(got, want) < 5e-3
    for name, g in grads.items():
        assert relative_error(g, want_grads[name]) < 2e-2, name


def test_the_lrn_op_replays_in_a_cuda_graph():
    z = torch.randn(8, 96, 55, 55, device="cuda").contiguous(memory_format=torch.channels_last)
    y = relu_lrn(z, 2, 1e-4, 0.75, 2.0)  # compile the kernel before capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = relu_lrn(z, 2, 1e-4, 0.75, 2.0)
    z.copy_(torch.randn_like(z))
    graph.replay()
    torch.testing.assert_close(captured, relu_lrn(z, 2, 1e-4, 0.75, 2.0), rtol=0, atol=0)
    assert not torch.equal(captured, y)


def test_a_nan_loss_on_cuda_never_updates_the_weights():
    model = AlexNet(num_classes=10).cuda()
    optimizer = make_optimizer(model, lr=0.01)
    guard = FiniteGuard(optimizer, torch.device("cuda"))
    assert not guard.immediate and optimizer.defaults["fused"]
    x, y = torch.randn(4, 3, 224, 224, device="cuda") * 60, torch.randint(0, 10, (4,), device="cuda")
    train_step(model, optimizer, x, y, guard=guard, step=1)
    before = [p.detach().clone() for p in model.parameters()]
    for step in (2, 3):
        train_step(model, optimizer, x * float("nan") if step == 2 else x, y, guard=guard, step=step)
    assert all(torch.equal(a, p.detach()) for a, p in zip(before, model.parameters()))
    with pytest.raises(NonFiniteLoss, match="at step 2"):
        guard.check()
