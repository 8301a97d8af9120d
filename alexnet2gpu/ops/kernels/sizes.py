"""The only sizes the kernels here are written for, importable without Triton: the ops one level up read them
to decide where the kernels run, so the numbers flow from the kernels up, never back."""
import torch

WINDOW = 5  # the LRN's window over channels (paper §3.3: n = 5)
POOL_KERNEL, POOL_STRIDE = 3, 2  # z = 3, s = 2: pooling windows overlap by one pixel (paper §3.4)
FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # the dtypes the kernels compute in
