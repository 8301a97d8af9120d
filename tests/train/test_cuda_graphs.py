"""train.py --cuda-graphs: a step's forward and backward replayed from one CUDA graph (cuda_graphs.py).

On the CPU: what a graph cannot hold is refused in one sentence, the flag follows the run's placement on
resume, and everything GraphedStep does around the graph (which batches it takes, warm-up, capture, the
graph's own input, the gradients) trains as eager training does, with a stand-in for the graph. On a GPU:
training with the graph gives the eager run's weights and momentum, through smaller batches, learning-rate
changes and dropout; the two-device layout with both towers on one GPU is graphed too; a NaN loss still
never updates the weights; train.py trains with the flag; a step a graph cannot hold is one sentence.
"""
import contextlib
import inspect
from dataclasses import asdict

import pytest
import torch

from alexnet2gpu import AlexNet, TwoTowerAlexNet
from alexnet2gpu.model.stack import StackOptions, TowerStack
from alexnet2gpu.train import cuda_graphs
from alexnet2gpu.train.config import Config, resume_config
from alexnet2gpu.train.cuda_graphs import GraphedStep, check_graphable
from alexnet2gpu.train.engine import FiniteGuard, NonFiniteLoss, train_step
from alexnet2gpu.train.optim import get_lr, make_optimizer, momentum_buffers, set_lr
from tests.helpers.parity import relative_error


@pytest.mark.parametrize("layout, devices, message", [
    ("tower-parallel", ["cuda:0"], "the tower-parallel layout exchanges activations with its peer rank"),
    ("merged", ["cpu"], "--cuda-graphs needs the model on a CUDA device, and this run computes on cpu"),
    ("two-device", ["cpu", "cpu"], "needs the model on a CUDA device"),
    ("two-device", ["cuda:0", "cuda:1"], "captures one GPU's stream, and this model spans cuda:0, cuda:1"),
])
def test_what_one_graph_cannot_hold_is_refused_in_one_sentence(layout, devices, message):
    with pytest.raises(ValueError, match=message) as caught:
        check_graphable(layout, devices)
    assert str(caught.value).count(". ") == 0 and str(caught.value).endswith(".")


def test_a_graphed_step_refuses_a_model_on_the_cpu():
    with pytest.raises(ValueError, match="needs the model on a CUDA device"):
        GraphedStep(AlexNet(num_classes=4))
    with pytest.raises(ValueError, match="needs the model on a CUDA device"):
        GraphedStep(TwoTowerAlexNet(num_classes=4, devices=("cpu", "cpu")))


def test_under_a_graph_the_merged_stack_is_built_in_the_towers_form():
    """train.py --cuda-graphs and bench's graphed rows build their models with the same options."""
    from alexnet2gpu.bench.loop import reference_variant
    from alexnet2gpu.bench.variants import VARIANTS, build_variant
    from alexnet2gpu.train.setup import build_training
    assert cuda_graphs.GRAPH_OPTIONS == StackOptions(convs="towers")
    assert "options=GRAPH_OPTIONS if cfg.cuda_graphs" in inspect.getsource(build_training)
    for name in ("merged-graphs", "two-device-graphs"):
        model = build_variant(VARIANTS[name], torch.device("cpu"), num_classes=10)
        assert {s.options for s in model.modules() if isinstance(s, TowerStack)} == {cuda_graphs.GRAPH_OPTIONS}
    assert build_variant(VARIANTS["merged"], torch.device("cpu"), num_classes=10).stack.options == StackOptions()
    assert reference_variant(torch.device("cuda"), graphs=True) == "merged-bf16-graphs"


def test_a_resumed_run_asks_for_cuda_graphs_again():
    """Like the devices, graphs are placement: a run resumed on a machine without a GPU must not fail."""
    saved = asdict(Config(cuda_graphs=True))
    assert resume_config(saved, {}).cuda_graphs is False
    assert resume_config(saved, {"cuda_graphs": True}).cuda_graphs is True


class EmulatedGraph(GraphedStep):
    """GraphedStep on the CPU, where no CUDA graph exists. The capture leaves its outputs as garbage (NaN) and
    the random generator where it was, as a real capture runs nothing; a replay reruns the recorded step and
    writes its loss and gradients into the recorded tensors, as a graph's kernels write into their fixed
    memory. So everything GraphedStep does around the graph (warm-up, which batches it takes, the graph's own
    input, the gradients pointed back after an eager step) is checked here, and the graph itself on a GPU
    below."""

    def _synchronize(self):
        pass

    def _on_capture_stream(self):
        return contextlib.nullcontext()

    def _record(self, step):
        rng = torch.get_rng_state()  # a capture draws no random numbers: each replay does
        out = step()
        torch.set_rng_state(rng)
        out.fill_(float("nan"))
        for p in self.params:
            p.grad.fill_(float("nan"))

        def replay():  # writes the recorded tensors and leaves every Python attribute (p.grad) as it was
            attributes = [p.grad for p in self.params]
            out.copy_(step())
            for static, p, grad in zip(self.grads, self.params, attributes):
                static.copy_(p.grad)
                p.grad = grad
        return out, replay


def test_around_the_graph_training_is_the_eager_training(monkeypatch):
    """Batches of another size before, between and after the capture, lr drops, dropout: the same weights."""
    monkeypatch.setattr(cuda_graphs, "check_graphable", lambda layout, devices: None)
    sizes = [8, 8, 8, 5, 8, 8, 5, 8, 8]  # warm-up 3 x 8, eager 5, capture at the next 8, eager 5, replays
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(n, 12, generator=gen), torch.randint(0, 4, (n,), generator=gen)) for n in sizes]
    runs = []
    for emulated in (False, True):
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                                    torch.nn.Linear(16, 4))
        optimizer = make_optimizer(model, lr=0.1)
        graphed = EmulatedGraph(model, batch_size=8) if emulated else None
        losses = []
        for step, (x, y) in enumerate(batches, 1):
            losses.append(float(train_step(model, optimizer, x, y, step=step, graphed=graphed)))
            if step in (2, 6):
                set_lr(optimizer, get_lr(optimizer) / 10)
        runs.append((losses, [p.detach().clone() for p in model.parameters()], graphed))
    (want_losses, want, _), (got_losses, got, graphed) = runs
    assert graphed.captured and graphed.warm_steps == 3 and graphed.images.shape == (8, 12)
    assert got_losses == pytest.approx(want_losses, rel=1e-6)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def train(model, graphed, batches, amp=None):
    """SGD over `batches` (the lr drops after the third and the sixth), with the deferred non-finite check; returns the
    losses, and the change of all weights and the momentum buffers, each as one vector in canonical order."""
    optimizer = make_optimizer(model, lr=1e-4)  # higher, the loss explodes and rounding grows chaotically
    guard = FiniteGuard(optimizer, torch.device("cuda"))
    start = flat(model.to_canonical({n: p.detach() for n, p in model.named_parameters()}))
    losses = []
    for step, (x, y) in enumerate(batches, 1):
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp else None
        losses.append(float(train_step(model, optimizer, x, y, autocast=autocast, guard=guard, step=step,
                                       graphed=graphed)))
        if step in (3, 6):  # during the warm-up and after the capture
            set_lr(optimizer, get_lr(optimizer) / 10)
    guard.check()
    weights = flat(model.to_canonical({n: p.detach() for n, p in model.named_parameters()}))
    return losses, weights - start, flat(model.to_canonical(momentum_buffers(model, optimizer)))


def flat(tensors: dict) -> torch.Tensor:
    return torch.cat([t.detach().double().flatten().cpu() for _, t in sorted(tensors.items())])


def cuda_batches(sizes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [((torch.randn(n, 3, 224, 224, generator=gen) * 60).cuda().contiguous(memory_format=torch.channels_last),
             torch.randint(0, 10, (n,), generator=gen).cuda()) for n in sizes]


@pytest.mark.cuda
@pytest.mark.parametrize("layout, amp, tolerance", [("merged", None, 1e-3), ("merged", "bf16", 5e-2),
                                                    ("two-device", None, 1e-3)])
def test_training_with_the_graph_gives_the_eager_runs_weights(exact_fp32, layout, amp, tolerance):
    """Warm-up, capture, replays, smaller batches before and after the capture (eager) and an lr change: the
    graphed run makes the eager run's weight updates and momentum, dropout included (the CUDA generator feeds
    both the same offsets). They may differ in rounding: cuDNN may pick other algorithms inside the capture.
    Even at this lr, on the CPU, a 1e-7 change of the inputs moves the updates by 1.2e-4 (max-pool and ReLU
    decisions flip); a stale input or gradient moves them by far more."""
    sizes = [5, 8, 8, 8, 8, 5, 8, 8]  # eager 5; warm-up 3 x 8; capture at the next 8; eager 5; replays
    batches = cuda_batches(sizes)

    def model():
        torch.manual_seed(1)
        if layout == "two-device":
            net = TwoTowerAlexNet(num_classes=10, devices=("cuda:0", "cuda:0"))
        else:
            net = AlexNet(num_classes=10).cuda()
        return net.to(memory_format=torch.channels_last)

    eager_model, graphed_model = model(), model()
    graphed = GraphedStep(graphed_model, layout, batch_size=8)
    torch.manual_seed(2)  # the dropout masks
    want = train(eager_model, None, batches, amp)
    torch.manual_seed(2)
    got = train(graphed_model, graphed, batches, amp)
    assert graphed.captured and graphed.warm_steps == 3 and graphed.images.shape[0] == 8
    assert got[0] == pytest.approx(want[0], rel=tolerance)
    assert relative_error(got[1], want[1]) < tolerance, "weight updates"
    assert relative_error(got[2], want[2]) < tolerance, "momentum"


@pytest.mark.cuda
def test_a_nan_loss_under_the_graph_never_updates_the_weights():
    model = AlexNet(num_classes=10).cuda()
    optimizer = make_optimizer(model, lr=0.01)
    guard = FiniteGuard(optimizer, torch.device("cuda"))
    graphed = GraphedStep(model, warmup=1)
    (x, y), = cuda_batches([4])
    train_step(model, optimizer, x, y, guard=guard, step=1, graphed=graphed)  # warm-up
    train_step(model, optimizer, x, y, guard=guard, step=2, graphed=graphed)  # capture and replay
    before = [p.detach().clone() for p in model.parameters()]
    for step in (3, 4):
        train_step(model, optimizer, x * float("nan") if step == 3 else x, y, guard=guard, step=step, graphed=graphed)
    assert graphed.captured
    assert all(torch.equal(a, p.detach()) for a, p in zip(before, model.parameters()))
    with pytest.raises(NonFiniteLoss, match="at step 3"):
        guard.check()


@pytest.mark.cuda
def test_train_py_trains_with_cuda_graphs(tmp_path, capsys):
    from alexnet2gpu.cli import train as train_py
    from alexnet2gpu.data.synthetic import ensure_synthetic
    folders = ensure_synthetic(2, 8, 2, cache_dir=tmp_path, log=lambda *a: None)
    code = train_py.main(["--data", str(folders), "--device", "cuda", "--cuda-graphs", "--amp", "bf16",
                          "--channels-last", "--batch-size", "2", "--lr", "0.0001", "--workers", "0", "--epochs", "2",
                          "--out", str(tmp_path / "runs"), "--run-name", "r"])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    assert "layout merged on cuda:0 (forward and backward replayed from a CUDA graph)" in out
    assert (tmp_path / "runs" / "r" / "checkpoints" / "epoch_0002.pt").is_file()


class SyncsInForward(torch.nn.Module):
    """Reads a value back to the host in its forward, which a CUDA graph cannot hold."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 4)

    def forward(self, x):
        return self.fc(x) * (1.0 if x.sum().item() == x.sum().item() else 2.0)


@pytest.mark.cuda
def test_a_step_that_cannot_be_captured_stops_with_one_sentence_naming_the_flag():
    from alexnet2gpu.errors import TrainError
    model = SyncsInForward().cuda()
    optimizer = make_optimizer(model, lr=0.1)
    graphed = GraphedStep(model, warmup=1)
    x, y = torch.randn(8, 3, device="cuda"), torch.randint(0, 4, (8,), device="cuda")
    train_step(model, optimizer, x, y, graphed=graphed)  # the warm-up runs eagerly
    with pytest.raises(TrainError, match="--cuda-graphs could not capture the training step .*leave --cuda-graphs out"):
        train_step(model, optimizer, x, y, graphed=graphed)
    # The failed capture left nothing behind: this thread is back on its stream, and random draws on the GPU
    # (torch 2.11 left its generator marked as capturing) work, here and in every later test of the process.
    assert torch.cuda.current_stream() == torch.cuda.default_stream()
    kept = torch.nn.functional.dropout(torch.ones(4096, device="cuda"), 0.5).count_nonzero().item()
    assert 1500 < kept < 2600
    train_step(model, optimizer, x, y)
