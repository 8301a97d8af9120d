"""The network's own operations, each with its CPU path and, on CUDA, its Triton kernels as a custom op with its
autograd formula: the per-tower LRN (lrn.py, lrn_op.py), the overlapping max-pool (pool.py), ReLU + LRN + max-pool
as one step (lrn_pool.py), and conv1's forms (conv.py). The Triton kernels themselves live in kernels/."""
