"""The fast LRN (lrn.LRNFunction) against the formula and torch's own LRN, forward and backward, per tower.

A mismatch here means the network no longer normalises as the paper (§3.3) and the original code did: a
wrong window (edge channels differ), a wrong closed-form backward (gradcheck fails), or towers that leak
into each other (channels 46-49 of a 96-map layer change).
"""
import pytest
import torch
import torch.nn.functional as F

from alexnet2gpu.model.layers import LRN_ALPHA, LRN_BETA, LRN_K, LRN_SIZE
from alexnet2gpu.ops import lrn
from alexnet2gpu.ops.lrn import local_response_norm, lrn_reference

PAPER = (LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K)
STRONG = (5, 0.5, 0.75, 2.0)  # a large alpha so the window's effect is far above rounding


def per_tower(fn, x, towers):
    return torch.cat([fn(part) for part in x.chunk(towers, dim=1)], dim=1)


@pytest.mark.parametrize("towers", [1, 2])
@pytest.mark.parametrize("consts", [PAPER, STRONG])
def test_forward_matches_reference_and_torch(towers, consts):
    torch.manual_seed(0)
    x = torch.randn(3, 2 * 9, 5, 4, dtype=torch.float64) * 20
    fast = local_response_norm(x, towers, *consts)
    ref = per_tower(lambda a: lrn_reference(a, *consts), x, towers)
    native = per_tower(lambda a: F.local_response_norm(a, *consts), x, towers)
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast, native, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(local_response_norm(x, towers, *consts, impl="formula"), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("channels_last", [False, True])
def test_plain_formula_gradcheck(channels_last):
    """The plain formula exporters trace (impl="formula")."""
    x = torch.randn(2, 2 * 6, 3, 4, dtype=torch.float64) * 3
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    assert torch.autograd.gradcheck(lambda a: local_response_norm(a, 2, *STRONG, impl="formula"), (x.requires_grad_(),))


@pytest.mark.parametrize("towers", [1, 2])
@pytest.mark.parametrize("channels_last", [False, True])
def test_gradcheck(towers, channels_last):
    torch.manual_seed(1)
    x = torch.randn(2, 2 * 6, 3, 4, dtype=torch.float64) * 3
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda a: local_response_norm(a, towers, *STRONG), (x,))


def test_backward_matches_torch_in_float32():
    torch.manual_seed(2)
    x = (torch.relu(torch.randn(4, 96, 11, 11)) * 30).requires_grad_()
    g = torch.randn(4, 96, 11, 11)
    (grad_fast,) = torch.autograd.grad(local_response_norm(x, 2, *PAPER), x, g)
    (grad_native,) = torch.autograd.grad(per_tower(lambda a: F.local_response_norm(a, *PAPER), x, 2), x, g)
    torch.testing.assert_close(grad_fast, grad_native, rtol=1e-5, atol=1e-6)


def test_towers_never_mix():
    """Per tower differs from one LRN over all 96 maps exactly at the border channels 46-49."""
    torch.manual_seed(3)
    x = torch.rand(2, 96, 3, 3, dtype=torch.float64) * 50 + 1
    ours = local_response_norm(x, 2, *STRONG)
    single = lrn_reference(x, *STRONG)
    differs = ((ours - single).abs() > 1e-9).flatten(2).any(-1).any(0).nonzero().flatten().tolist()
    assert differs == [46, 47, 48, 49]
    # and changing tower 1's maps leaves tower 0's output untouched
    y = x.clone()
    y[:, 48:] *= 3
    torch.testing.assert_close(local_response_norm(y, 2, *STRONG)[:, :48], ours[:, :48], rtol=0, atol=0)


def test_clear_errors():
    x = torch.randn(1, 10, 2, 2)
    with pytest.raises(ValueError, match="unknown LRN implementation 'slow'"):
        local_response_norm(x, 2, *PAPER, impl="slow")
    with pytest.raises(ValueError, match="cannot be split into 3 towers"):
        local_response_norm(x, 3, *PAPER)
    with pytest.raises(ValueError, match="odd window size"):
        local_response_norm(x, 2, 4, 1e-4, 0.75, 2.0)


@pytest.mark.parametrize("channels_last", [False, True])
def test_chunks_and_odd_sizes_change_nothing(monkeypatch, channels_last):
    """Tiny chunks (several rows each and a short last one) give what one chunk gives, in both layouts;
    window sizes other than 5 take the plain shifted-add path and still match the formula."""
    torch.manual_seed(4)
    x = torch.randn(3, 2 * 7, 5, 3, dtype=torch.float64) * 4
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    g = torch.randn(x.shape, dtype=torch.float64)
    whole = local_response_norm(x.requires_grad_(), 2, *STRONG)
    (grad_whole,) = torch.autograd.grad(whole, x, g)
    # 4 rows of 11 (channels-last: 90 rows of 7 + 4 pads) or of 11 x 15 (contiguous: 6 rows) per chunk,
    # so the last chunk is short in both layouts
    monkeypatch.setattr(lrn, "CHUNK_ELEMENTS_PER_THREAD", 4 * 11 * (1 if channels_last else 15) // torch.get_num_threads())
    chunked = local_response_norm(x, 2, *STRONG)
    (grad_chunked,) = torch.autograd.grad(chunked, x, g)
    assert chunked.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    torch.testing.assert_close(chunked, whole, rtol=1e-14, atol=0)
    torch.testing.assert_close(grad_chunked, grad_whole, rtol=1e-14, atol=0)
    small = x[:1].detach().requires_grad_()
    assert torch.autograd.gradcheck(lambda a: local_response_norm(a, 2, *STRONG), (small,))
    for size in (3, 7):
        consts = (size, 0.5, 0.6, 1.5)
        ref = per_tower(lambda a: lrn_reference(a, *consts), x.detach(), 2)
        torch.testing.assert_close(local_response_norm(x.detach(), 2, *consts), ref, rtol=1e-12, atol=1e-12)
        assert torch.autograd.gradcheck(lambda a: local_response_norm(a, 2, *consts), (small,))
