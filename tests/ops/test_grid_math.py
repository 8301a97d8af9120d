"""The plain-Python arithmetic of the Triton launches gives Triton's own numbers; the dtype kernels compute in."""
import triton

from alexnet2gpu.ops.kernels.grid import cdiv, next_power_of_2


def test_cdiv_and_next_power_of_2_are_tritons():
    for n in list(range(1, 300)) + [3025, 774_400, 186_624, 2**20, 2**20 + 1]:
        assert next_power_of_2(n) == triton.next_power_of_2(n), n
        for b in (1, 2, 3, 16, 48, 1024):
            assert cdiv(n, b) == triton.cdiv(n, b), (n, b)


def test_kernels_compute_in_float64_for_float64_maps_and_float32_otherwise():
    import torch
    import triton.language as tl

    from alexnet2gpu.ops.kernels.grid import accumulator_dtype, compute_type
    for dtype, want, tl_want in ((torch.float64, torch.float64, tl.float64), (torch.float32, torch.float32, tl.float32),
                                 (torch.bfloat16, torch.float32, tl.float32), (torch.float16, torch.float32, tl.float32)):
        maps = torch.zeros(1, dtype=dtype)
        assert accumulator_dtype(maps) == want and compute_type(maps) == tl_want
