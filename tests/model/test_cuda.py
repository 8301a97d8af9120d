"""On a GPU: the CUDA defaults (fused Triton ReLU+LRN, cuDNN, bf16, the deferred non-finite check) against
the float64 CPU oracle. Skipped without CUDA: the CPU suite checks the same maths with the kernels interpreted.

Tolerances are relative errors (norm of the difference over the norm of the reference). The fp32 parity tests
turn TF32 off: with it, cuDNN rounds inputs to 10-bit mantissas, and conv1's weight gradient (a sum over
every pixel of the batch with much cancellation) then differs from the oracle by about 8 %, which would hide
any real mistake. bf16 is checked on the logits and on fc8's gradient only, for the same reason.
"""
import collections
import re

import pytest
import torch

from alexnet2gpu import AlexNet, TwoTowerAlexNet
from alexnet2gpu.model.stack import StackOptions
from alexnet2gpu.ops.lrn_op import relu_lrn
from alexnet2gpu.train.cuda_graphs import GRAPH_OPTIONS
from alexnet2gpu.train.engine import FiniteGuard, NonFiniteLoss, train_step
from alexnet2gpu.train.optim import make_optimizer
from tests.helpers.child_env import child_env
from tests.helpers.parity import relative_error

pytestmark = pytest.mark.cuda


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


@pytest.mark.parametrize("layout", ["merged", "two-device", "merged-compiled", "merged-graph-forms"])
def test_fp32_on_cuda_matches_the_float64_oracle(oracle, exact_fp32, layout):
    """The CUDA defaults (Triton ReLU+LRN, channels-last cuDNN convolutions, conv1 as space-to-depth, fused SGD
    aside) compute the oracle's function: both towers on one GPU for the two-device layout; torch.compile with
    Inductor; the forms train.py --cuda-graphs takes."""
    weights, x, (want, want_grads) = oracle
    if layout == "two-device":
        model = TwoTowerAlexNet(num_classes=10, dropout=0.0, devices=("cuda:0", "cuda:0"))
    else:
        options = GRAPH_OPTIONS if layout == "merged-graph-forms" else StackOptions()
        model = AlexNet(num_classes=10, dropout=0.0, options=options).cuda()
        if layout == "merged-compiled":
            model.compile()
    model.load_state_dict(weights)
    got, grads = logits_and_grads(model, x.float().cuda())
    assert relative_error(got, want) < 1e-4  # cuDNN's fp32 algorithms (FFT, Winograd) round differently
    for name, g in grads.items():
        assert relative_error(g, want_grads[name]) < 1e-3, name


@pytest.mark.parametrize("memory_format, want", [
    (torch.channels_last, {"relu_lrn_max_pool": 2, "max_pool": 1}),  # as runs on CUDA lay the maps out
    (torch.contiguous_format, {"relu_lrn": 2, "max_pool": 3}),  # the fused backward's tile needs channels-last
])
def test_compiled_on_cuda_keeps_the_lrn_and_the_max_pool_whole(memory_format, want):
    """Under torch.compile on CUDA the model is one graph that calls the custom ops, not a decomposition for
    Inductor: ReLU + LRN + max-pool as one op for conv1's and conv2's blocks on channels-last maps (apart on
    contiguous ones), the max-pool for conv5's."""
    graphs = []

    def record(gm, example_inputs):
        graphs.append(str(gm.graph))
        return gm.forward

    model = AlexNet(num_classes=10, dropout=0.0).cuda().to(memory_format=memory_format)
    x = torch.randn(2, 3, 224, 224, device="cuda").to(memory_format=memory_format)
    torch.compile(model, backend=record)(x)
    code = "\n".join(graphs)
    assert len(graphs) == 1, code
    ops = collections.Counter(re.findall(r"alexnet2gpu\.(\w+)", code))
    assert ops == want, code


def test_bf16_on_cuda_is_near_the_float64_oracle(oracle):
    weights, x, (want, want_grads) = oracle
    model = AlexNet(num_classes=10, dropout=0.0).cuda()
    model.load_state_dict(weights)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got, grads = logits_and_grads(model, x.float().cuda())
    assert relative_error(got, want) < 3e-2
    assert relative_error(grads["fc8.weight"], want_grads["fc8.weight"]) < 5e-2


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


def test_torchrun_on_a_gpu(tmp_path):
    """train.py under torchrun with CUDA: each rank takes a GPU (two ranks share one on a 1-GPU machine, over
    gloo), trains, and rank 0 writes the canonical checkpoint."""
    import subprocess
    import sys

    from tests.helpers.child_env import ROOT as root
    env = child_env(ALEXNET2GPU_CACHE=str(tmp_path / "cache"))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(root / "train.py"), "--device", "cuda", "--num-classes", "2", "--train-per-class", "4",
               "--val-per-class", "1", "--workers", "0", "--max-steps", "1", "--batch-size", "4",
               "--out", str(tmp_path / "runs"), "--dist-timeout", "60"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "layout tower-parallel" in done.stdout
    assert list((tmp_path / "runs").glob("*/checkpoints/epoch_0001.pt"))
