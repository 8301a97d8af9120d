"""A training step's forward and backward captured once as a CUDA graph, then replayed (`--cuda-graphs`).

Why: an eager bf16 step of this network launches a few hundred kernels, and on an H100 the host takes longer
to launch them than the GPU takes to run them (docs/benchmarks.md). A replayed graph launches them all in
one call, so the GPU never waits for Python.

What is captured: the forward (under the run's autocast), the cross-entropy and the backward into every
parameter's `.grad`. What stays eager: the non-finite check, the gradient average over tower pairs and the
fused SGD update, a handful of launches. The learning rate, the step number and the process group are
therefore never frozen into the graph: the schedule, checkpoint loads and tower pairs work as without it.

How, following the rules of CUDA-graph capture in PyTorch:
- the first `warmup` steps run eagerly on the capture stream, so that cuDNN's algorithm search, Triton's
  compiles and cuBLAS's workspaces happen before the capture, not in it;
- the graph reads its input from tensors of its own: each batch is copied into them before a replay, and the
  loss and gradients it writes are overwritten by the next replay;
- only batches of the run's batch size are warmed up with and captured, and only batches of the captured
  shape and layout replay, in the captured train/eval mode; any other batch (an epoch's last, smaller one)
  runs eagerly, and the parameters' `.grad` point back at the graph's gradients after every replay;
- dropout stays random: PyTorch's CUDA generator hands each replay fresh offsets, and a reseed between
  epochs reaches the graph;
- the capture only forbids unsafe calls in this thread ("thread_local"), so the loader's pinning thread and
  the JPEG-decoding thread go on working meanwhile.
"""
from __future__ import annotations

import contextlib

import torch

from alexnet2gpu.distributed.world import first_line
from alexnet2gpu.errors import TrainError
from alexnet2gpu.model.stack import StackOptions

WARMUP_STEPS = 3  # eager steps before the capture, as in PyTorch's own examples of whole-network capture
# How a model that runs under a graph is built: conv2, conv4 and conv5 per tower on dense maps ("towers"). That
# form does less GPU work than one grouped convolution but launches more kernels, so eagerly it waits for the
# host and loses, while a graph launches them all at once (docs/kernels.md). The maths and the parameters stay
# the same; a one-tower stack (two-device, tower-parallel) has no grouped convolution to replace.
GRAPH_OPTIONS = StackOptions(convs="towers")


def check_graphable(layout: str, devices) -> None:
    """Refuse, in one sentence, a run whose step one CUDA graph cannot hold: `devices` are where the model's
    parameters live."""
    if layout == "tower-parallel":
        raise ValueError("--cuda-graphs captures one process's step, and the tower-parallel layout exchanges "
                         "activations with its peer rank inside the step: leave --cuda-graphs out, or use the "
                         "merged layout.")
    devices = {torch.device(d) for d in devices}
    if any(d.type != "cuda" for d in devices):
        raise ValueError("--cuda-graphs needs the model on a CUDA device, and this run computes on "
                         f"{', '.join(sorted(str(d) for d in devices))}: leave --cuda-graphs out.")
    if len(devices) > 1:
        raise ValueError("--cuda-graphs captures one GPU's stream, and this model spans "
                         f"{', '.join(sorted(str(d) for d in devices))}: use the merged layout (or both towers "
                         "on one GPU), or leave --cuda-graphs out.")


class GraphedStep:
    """Forward, loss and backward of full batches replayed from one CUDA graph (see the module's notes).

    Call it as `loss = graphed(images, targets, autocast)` for each batch it `takes`; it leaves the gradients
    in the parameters' `.grad` and returns the detached loss, like `engine.forward_backward`."""

    def __init__(self, model: torch.nn.Module, layout: str = "merged", warmup: int = WARMUP_STEPS,
                 batch_size: int | None = None):
        params = [p for p in model.parameters() if p.requires_grad]
        check_graphable(layout, {p.device for p in params})
        self.model, self.params, self.warmup = model, params, warmup
        self.batch_size = batch_size  # None: the first batch's
        self.device = params[0].device
        self.stream = None  # the capture stream, made on first use
        self.replay = None  # the captured graph's replay
        self.warm_steps = 0
        self.images = self.targets = self.loss = None  # the graph's own input and output
        self.grads: list = []
        self.training = None

    @property
    def captured(self) -> bool:
        return self.replay is not None

    def takes(self, images: torch.Tensor, targets: torch.Tensor) -> bool:
        """Whether this batch can replay the graph (before the capture: whether it may be warmed up with)."""
        if self.replay is None:
            return images.device == self.device and len(images) == (self.batch_size or len(images))
        return (images.shape == self.images.shape and images.stride() == self.images.stride()
                and images.dtype == self.images.dtype and images.device == self.device
                and targets.shape == self.targets.shape and self.model.training == self.training)

    def __call__(self, images: torch.Tensor, targets: torch.Tensor, autocast=None) -> torch.Tensor:
        if self.replay is None:
            if self.warm_steps < self.warmup:
                return self._warm_up(images, targets, autocast)
            self._capture(images, targets, autocast)
        self.images.copy_(images, non_blocking=True)
        self.targets.copy_(targets, non_blocking=True)
        self.replay()
        for p, grad in zip(self.params, self.grads):
            p.grad = grad  # an eager step in between (set_to_none) may have replaced them
        return self.loss

    def _warm_up(self, images, targets, autocast) -> torch.Tensor:
        """One eager step on the capture stream. The device is synchronised around it (a few times a run) so
        that no tensor crosses between the streams while the other still uses it."""
        from .engine import forward_backward

        self._synchronize()
        with self._on_capture_stream():
            loss = forward_backward(self.model, images, targets, autocast)
        self._synchronize()
        self.warm_steps += 1
        return loss

    def _capture(self, images, targets, autocast) -> None:
        """Record the step into the graph's own tensors; nothing runs until the first replay."""
        from .engine import forward_backward

        self._synchronize()  # the last warm-up's gradients are freed below: their update must be done
        self.images = images.clone()  # the graph's own input, in the batch's layout
        self.targets = targets.to(self.device, copy=True)
        self.training = self.model.training
        for p in self.params:
            p.grad = None  # so the backward allocates the gradients in the graph's memory
        self.loss, replay = self._record(lambda: forward_backward(
            self.model, self.images, self.targets, autocast or contextlib.nullcontext()))
        self.grads = [p.grad for p in self.params]
        self.replay = replay

    # The CUDA side (tests/train/test_cuda_graphs.py stands in for the three methods below on the CPU).
    def _synchronize(self) -> None:
        torch.cuda.synchronize(self.device)

    def _on_capture_stream(self):
        return torch.cuda.stream(self._capture_stream())

    def _capture_stream(self) -> torch.cuda.Stream:
        if self.stream is None:
            self.stream = torch.cuda.Stream(self.device)
        return self.stream

    def _record(self, step):
        """Capture `step()` as a CUDA graph: (its output, the graph's replay)."""
        graph = torch.cuda.CUDAGraph()
        stream = torch.cuda.current_stream(self.device)
        try:
            with torch.cuda.graph(graph, stream=self._capture_stream(), capture_error_mode="thread_local"):
                out = step()
        except RuntimeError as error:  # an operation CUDA graphs do not allow: name it, keep the run resumable
            _recover_from_failed_capture(self.device, stream)
            raise TrainError(f"--cuda-graphs could not capture the training step ({first_line(error)}): leave "
                             "--cuda-graphs out (finished epochs are checkpointed: --resume auto).") from error
        return out, graph.replay


def _recover_from_failed_capture(device: torch.device, stream: torch.cuda.Stream) -> None:
    """Undo what a failed capture leaves behind in this process, seen with torch 2.11 on an H100: the thread
    still on the capture stream, and the GPU's default random generator still marked as capturing, so that
    every later random draw on it (dropout, torch.randn) fails with "Offset increment outside graph capture".
    The generator gets a fresh state with the same seed and offset."""
    torch.cuda.set_stream(stream)
    generator = torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    fresh = torch.Generator(device)
    fresh.manual_seed(generator.initial_seed())
    fresh.set_offset(generator.get_offset())
    generator.graphsafe_set_state(fresh.graphsafe_get_state())
