"""The plain-Python grid arithmetic of the Triton launches gives Triton's own numbers."""
import triton

from alexnet2gpu.grid_math import cdiv, next_power_of_2


def test_cdiv_and_next_power_of_2_are_tritons():
    for n in list(range(1, 300)) + [3025, 774_400, 186_624, 2**20, 2**20 + 1]:
        assert next_power_of_2(n) == triton.next_power_of_2(n), n
        for b in (1, 2, 3, 16, 48, 1024):
            assert cdiv(n, b) == triton.cdiv(n, b), (n, b)
