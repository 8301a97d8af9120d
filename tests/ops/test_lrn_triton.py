"""The fused Triton ReLU + LRN (ops/lrn_op.py, ops/kernels/lrn.py) against the formula, forward and backward.

Without a GPU, conftest.py sets TRITON_INTERPRET=1 and these kernels run on CPU tensors; with one, on the GPU.
A mismatch means the CUDA default no longer computes relu then the paper's LRN (§3.3) per tower: a wrong
window or tower edge (edge channels differ), a wrong closed-form backward, or a layout the kernel walks wrongly.
"""
import pytest
import torch

from alexnet2gpu.model.layers import LRN_ALPHA, LRN_BETA, LRN_K, LRN_SIZE
from alexnet2gpu.ops.lrn import lrn_reference, relu_local_response_norm
from alexnet2gpu.ops.lrn_op import relu_lrn
from tests.helpers.parity import assert_compiles_whole, relative_error

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
PAPER = (LRN_ALPHA, LRN_BETA, LRN_K)
STRONG = (0.5, 0.75, 2.0)  # a large alpha so the window's effect is far above rounding
LAYOUTS = [torch.contiguous_format, torch.channels_last]


def reference(z: torch.Tensor, towers: int, consts) -> torch.Tensor:
    """relu then the formula on each tower's channels, in float64."""
    a = torch.relu(z.double())
    return torch.cat([lrn_reference(t, LRN_SIZE, *consts) for t in a.chunk(towers, dim=1)], dim=1)


def maps(towers: int, channels: int, dtype, layout, n: int = 3, size: int = 5) -> torch.Tensor:
    z = torch.randn(n, towers * channels, size, size + 1, dtype=dtype, device=DEVICE) * 3
    return z.contiguous(memory_format=layout).requires_grad_()


# float64 on a GPU: Triton's exp and log keep about float32 accuracy there (exact under the interpreter)
FLOAT64_TOLERANCE = 1e-7 if DEVICE == "cuda" else 1e-13


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("towers,channels", [(2, 9), (1, 6), (2, 48)])
@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, FLOAT64_TOLERANCE), (torch.float32, 1e-6)])
def test_forward_and_backward_match_the_formula(layout, towers, channels, dtype, tolerance):
    z = maps(towers, channels, dtype, layout)
    y = relu_lrn(z, towers, *STRONG)
    want = reference(z.detach(), towers, STRONG)
    assert y.dtype == dtype and y.is_contiguous(memory_format=layout)
    assert relative_error(y, want) < tolerance
    g = torch.randn_like(y)
    (grad,) = torch.autograd.grad(y, z, g)
    z64 = z.detach().double().requires_grad_()
    (want_grad,) = torch.autograd.grad(reference(z64, towers, STRONG), z64, g.double())
    assert relative_error(grad, want_grad) < tolerance * 10


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_eager_path_is_the_op_without_its_dispatch(layout):
    """Eager calls take the kernels through a plain autograd.Function; the op is for torch.compile."""
    from alexnet2gpu.ops.lrn_op import fused_relu_lrn
    z = maps(2, 9, torch.float64, layout)
    y = fused_relu_lrn(z, 2, *STRONG)
    assert torch.equal(y, relu_lrn(z, 2, *STRONG)) and y.grad_fn.name().startswith("_EagerReluLRN")
    g = torch.randn_like(y)
    assert torch.equal(torch.autograd.grad(y, z, g)[0], torch.autograd.grad(relu_lrn(z, 2, *STRONG), z, g)[0])


def test_gradcheck_in_float64():
    """Finite differences against the closed-form backward, the bias's gradient included. Small maps (4 channels
    a tower: the window meets both tower edges), and gradcheck's fast mode (random projections of the Jacobian
    rather than every column of it): every evaluation is an interpreted launch on a CPU, and the full check
    took 20 s. The backward is also compared with the float64 formula's own gradient above."""
    z = maps(2, 4, torch.float64, torch.contiguous_format, n=1, size=2)
    bias = torch.randn(8, dtype=torch.float64, device=DEVICE).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: relu_lrn(a, 2, *STRONG, b), (z, bias), fast_mode=True)


def test_towers_never_mix():
    """Changing tower 1's maps leaves tower 0's outputs bit-identical (a 96-map LRN would mix 46-49)."""
    z = maps(2, 48, torch.float32, torch.channels_last).detach()
    other = z.clone()
    other[:, 48:] = torch.randn_like(other[:, 48:]) * 3
    assert torch.equal(relu_lrn(z, 2, *STRONG)[:, :48], relu_lrn(other, 2, *STRONG)[:, :48])


def test_paper_constants_and_the_dispatch():
    """impl="triton" through relu_local_response_norm is the op, with the paper's constants."""
    z = maps(2, 9, torch.float64, torch.channels_last).detach() * 40  # conv-output scale: the window matters
    y = relu_local_response_norm(z, 2, LRN_SIZE, *PAPER, impl="triton")
    assert relative_error(y, reference(z, 2, PAPER)) < FLOAT64_TOLERANCE


def test_nan_propagates_as_through_torch_relu():
    """A NaN map stays NaN (with its window neighbours), as relu then LRN gives it: the non-finite loss
    check relies on it (a GPU max() instruction would have turned it into 0)."""
    z = maps(2, 9, torch.float32, torch.channels_last).detach()
    z[0, 3, 1, 1] = float("nan")
    y = relu_lrn(z, 2, *STRONG)
    want = reference(z, 2, STRONG)
    assert torch.equal(y.isnan(), want.isnan()) and y.isnan().sum() == 5  # channels 1..5 of that pixel


def test_triton_refuses_what_it_cannot_compute():
    z = maps(2, 4, torch.float32, torch.contiguous_format).detach()
    with pytest.raises(ValueError, match="window of 5"):
        relu_local_response_norm(z, 2, 3, *PAPER, impl="triton")
    from alexnet2gpu.ops.lrn import local_response_norm
    with pytest.raises(ValueError, match="relu_local_response_norm"):  # no ReLU of its own: not the fused op
        local_response_norm(z, 2, LRN_SIZE, *PAPER, impl="triton")


def test_compiles_without_a_graph_break():
    z = maps(2, 4, torch.float32, torch.channels_last, n=2, size=3)
    assert_compiles_whole(lambda a: relu_lrn(a, 2, *STRONG) * 2.0, z)


@pytest.mark.parametrize("form", ["gather", "tile"])
def test_both_backward_forms_match_the_formula(form):
    """Each backward kernel (lrn_kernels.FORMS) on channels-last maps with 48 channels a tower (conv1's), which
    fill 48 of a 64-lane tile; the tile form also walks contiguous maps (other tests)."""
    from alexnet2gpu.ops.kernels import lrn as lrn_kernels
    z = maps(2, 48, torch.float64, torch.channels_last, n=2, size=3).detach()
    y = lrn_kernels.relu_lrn_forward(z, 2, *STRONG, tile=256)
    assert relative_error(y, reference(z, 2, STRONG)) < FLOAT64_TOLERANCE
    g = torch.randn_like(y)
    dz, no_bias = lrn_kernels.relu_lrn_backward(g, z, y, 2, *STRONG, form=form, tile=256)
    assert no_bias is None
    z64 = z.clone().requires_grad_()
    (want,) = torch.autograd.grad(reference(z64, 2, STRONG), z64, g)
    assert relative_error(dz, want) < FLOAT64_TOLERANCE * 10


def test_the_form_follows_the_layout():
    from alexnet2gpu.ops.kernels.lrn import default_form
    assert default_form(maps(2, 48, torch.float32, torch.channels_last).detach()) == "gather"
    assert default_form(maps(2, 64, torch.float32, torch.channels_last).detach()) == "gather"
    assert default_form(maps(2, 48, torch.float32, torch.contiguous_format).detach()) == "tile"


def test_the_cuda_default_resolves_without_an_import_lookup(monkeypatch):
    """torch.compile in torch 2.11 cannot trace importlib's find_spec: one lookup per LRN call split every
    compiled CUDA graph at each LRN (seen on an H100). Resolving must use what was looked up at import."""
    import importlib.util

    from alexnet2gpu.ops.lrn import resolve_impl

    def refuse(*args, **kwargs):
        raise AssertionError("importlib.util.find_spec called while resolving the LRN")

    monkeypatch.setattr(importlib.util, "find_spec", refuse)
    assert resolve_impl("auto", torch.device("cuda"), LRN_SIZE, after_relu=True) == "triton"
    assert resolve_impl("auto", torch.device("cpu"), LRN_SIZE, after_relu=True) == "chunked"


# The window forms (lrn_window.py): each tensor loaded once per tile, the window summed in registers.
WINDOW_FORMS = ["gather"]
WINDOW_SHAPES = [(2, 9), (1, 48), (2, 16)]  # 9 and 48 pad a power-of-two tile, 16 fills one; 9 and 16 < 16 rows


def window_form_errors(form, towers, channels, dtype):
    """Relative errors of a window form's forward and backward (with its own forward's y) against the float64
    formula, on channels-last maps."""
    from alexnet2gpu.ops.kernels import lrn as lrn_kernels
    z = maps(towers, channels, dtype, torch.channels_last, n=2, size=3).detach()
    y = lrn_kernels.relu_lrn_forward(z, towers, *STRONG, form=form, tile=256)
    assert y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(y)
    dz, _ = lrn_kernels.relu_lrn_backward(g, z, y, towers, *STRONG, form=form, tile=256)
    z64 = z.double().requires_grad_()
    (want,) = torch.autograd.grad(reference(z64, towers, STRONG), z64, g.double())
    return relative_error(y, reference(z, towers, STRONG)), relative_error(dz, want)


@pytest.mark.parametrize("towers,channels", WINDOW_SHAPES)
@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, FLOAT64_TOLERANCE), (torch.float32, 1e-6)])
@pytest.mark.parametrize("form", WINDOW_FORMS)
def test_the_window_forms_match_the_formula(form, dtype, tolerance, towers, channels):
    """A wrong shift, clamp or edge mask of the gather changes the edge channels' sums."""
    forward, backward = window_form_errors(form, towers, channels, dtype)
    assert forward < tolerance and backward < tolerance * 10


@pytest.mark.parametrize("form", WINDOW_FORMS)
def test_the_window_forms_keep_the_towers_apart(form):
    """Changing tower 1's maps leaves tower 0's outputs and gradients bit-identical."""
    from alexnet2gpu.ops.kernels import lrn as lrn_kernels
    z = maps(2, 48, torch.float32, torch.channels_last, n=2, size=3).detach()
    other = z.clone()
    other[:, 48:] = torch.randn_like(other[:, 48:]) * 3
    g = torch.randn_like(z)
    outs = []
    for maps_ in (z, other):
        y = lrn_kernels.relu_lrn_forward(maps_, 2, *STRONG, form=form, tile=256)
        outs.append((y, lrn_kernels.relu_lrn_backward(g, maps_, y, 2, *STRONG, form=form, tile=256)[0]))
    assert torch.equal(outs[0][0][:, :48], outs[1][0][:, :48])
    assert torch.equal(outs[0][1][:, :48], outs[1][1][:, :48])
    assert not torch.equal(outs[0][0][:, 48:], outs[1][0][:, 48:])


def test_nan_in_the_window_forms():
    """gather puts a NaN where relu then LRN does (channels 1..5 of the pixel), and nowhere else."""
    from alexnet2gpu.ops.kernels import lrn as lrn_kernels
    z = maps(2, 9, torch.float32, torch.channels_last, n=2, size=3).detach()
    z[0, 3, 1, 1] = float("nan")
    want = reference(z, 2, STRONG).isnan()
    assert torch.equal(lrn_kernels.relu_lrn_forward(z, 2, *STRONG, form="gather", tile=256).isnan(), want)


def test_the_window_forms_refuse_contiguous_maps_and_unknown_forms():
    from alexnet2gpu.ops.kernels import lrn as lrn_kernels
    z = maps(2, 9, torch.float32, torch.contiguous_format).detach()
    y = lrn_kernels.relu_lrn_forward(z, 2, *STRONG)
    for form in WINDOW_FORMS:
        with pytest.raises(ValueError, match=f"the {form} LRN form needs channels-last maps"):
            lrn_kernels.relu_lrn_forward(z, 2, *STRONG, form=form)
        with pytest.raises(ValueError, match=f"the {form} LRN form needs channels-last maps"):
            lrn_kernels.relu_lrn_backward(torch.ones_like(z), z, y, 2, *STRONG, form=form)
    with pytest.raises(ValueError, match="unknown LRN kernel form 'flat'"):  # flat is a backward form only
        lrn_kernels.relu_lrn_forward(z, 2, *STRONG, form="flat")
    with pytest.raises(ValueError, match="unknown LRN kernel form 'gathr'"):
        lrn_kernels.relu_lrn_backward(torch.ones_like(z), z, y, 2, *STRONG, form="gathr")


# The convolution's bias added in the kernels (the model's CUDA path: its convolution then runs without it).
def biased_reference(z: torch.Tensor, bias: torch.Tensor, towers: int) -> torch.Tensor:
    return reference(z + bias.view(1, -1, 1, 1), towers, STRONG)


@pytest.mark.parametrize("form,layout", [("gather", torch.channels_last), ("tile", torch.channels_last),
                                         ("tile", torch.contiguous_format)])
@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, FLOAT64_TOLERANCE), (torch.float32, 1e-6)])
def test_the_bias_in_the_kernels_matches_the_formula(form, layout, dtype, tolerance):
    """y = LRN(relu(z + b)), dz and db (the sum of dz over every pixel, per channel) against float64 autograd; the
    gather form's tiles each sum their pixels (2 images of 3 x 4 pixels over tiles of 4 rows: several tiles)."""
    from alexnet2gpu.ops.kernels import lrn as lrn_kernels
    z = maps(2, 9, dtype, layout, n=2, size=3).detach()
    bias = torch.randn(18, dtype=dtype, device=DEVICE) * 3
    y = lrn_kernels.relu_lrn_forward(z, 2, *STRONG, form=form, tile=64, bias=bias)
    assert y.dtype == dtype and y.is_contiguous(memory_format=layout)
    assert relative_error(y, biased_reference(z, bias, 2)) < tolerance
    g = torch.randn_like(y)
    dz, dbias = lrn_kernels.relu_lrn_backward(g, z, y, 2, *STRONG, form=form, tile=64, bias=bias)
    z64, b64 = z.double().requires_grad_(), bias.double().requires_grad_()
    want_dz, want_db = torch.autograd.grad(biased_reference(z64, b64, 2), (z64, b64), g.double())
    assert dbias.dtype == dtype and dbias.shape == (18,)
    assert relative_error(dz, want_dz) < tolerance * 10
    assert relative_error(dbias, want_db) < tolerance * 10


def test_the_bias_through_the_op_and_the_eager_path():
    """The same numbers, gradients of the bias included, through the custom op and the eager Function."""
    from alexnet2gpu.ops.lrn_op import fused_relu_lrn
    z = maps(2, 4, torch.float64, torch.channels_last, n=2, size=3)
    bias = (torch.randn(8, dtype=torch.float64, device=DEVICE) * 3).requires_grad_()
    y = fused_relu_lrn(z, 2, *STRONG, bias)
    assert torch.equal(y, relu_lrn(z, 2, *STRONG, bias)) and y.grad_fn.name().startswith("_EagerReluLRN")
    g = torch.randn_like(y)
    eager = torch.autograd.grad(y, (z, bias), g)
    op = torch.autograd.grad(relu_lrn(z, 2, *STRONG, bias), (z, bias), g)
    assert all(torch.equal(a, b) for a, b in zip(eager, op))
    z64 = z.detach().clone().requires_grad_()
    want = torch.autograd.grad(biased_reference(z64, bias, 2), (z64, bias), g)
    assert all(relative_error(a, b) < FLOAT64_TOLERANCE * 10 for a, b in zip(eager, want))


def test_the_bias_compiles_without_a_graph_break():
    z = maps(2, 4, torch.float32, torch.channels_last, n=2, size=3)
    bias = torch.randn(8, device=DEVICE).requires_grad_()
    assert_compiles_whole(lambda a, b: relu_lrn(a, 2, *STRONG, b) * 2.0, z, bias)
