"""The fp32 parity criterion shared by every layout test."""
import torch

RELATIVE = 1e-4


def assert_near(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    """Largest difference at most RELATIVE of the largest value of `want`: elements near zero carry the
    rounding of the large ones, so an element-wise relative tolerance would flag noise."""
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    error = (got - want).abs().max().item() / max(want.abs().max().item(), 1e-12)
    assert error <= RELATIVE, f"{what}: largest difference is {error:.2e} of the largest value"


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """Norm of the difference over the norm of the reference, in float64 on the CPU."""
    return ((got.double().cpu() - want.double().cpu()).norm() / want.double().cpu().norm()).item()


def assert_compiles_whole(fn, *inputs: torch.Tensor) -> None:
    """torch.compile(fn) with fullgraph=True, which fails on any graph break (a custom op's fake implementation
    and autograd formula must suffice), gives fn's output and its gradients with respect to `inputs`."""
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    got, want = compiled(*inputs), fn(*inputs)
    torch.testing.assert_close(got, want)
    for a, b in zip(torch.autograd.grad(got.sum(), inputs), torch.autograd.grad(want.sum(), inputs)):
        torch.testing.assert_close(a, b)
