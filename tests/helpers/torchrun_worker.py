"""A tiny torchrun job for tests/distributed/test_torchrun.py: one exchange between the two towers of a pair; on the
first attempt rank 1 dies between the forward and the backward pass, so torchrun must restart the job."""
import os

import torch

from alexnet2gpu.distributed import world
from alexnet2gpu.distributed.comm import gather_from_towers

ctx = world.setup("cpu", timeout_s=30)
attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
with ctx.guard():
    x = torch.full((1, 1, 1, 1), float(ctx.tower), requires_grad=True)
    y = gather_from_towers(x, ctx.tower_group)
    if attempt == 0 and ctx.rank == 1:
        os._exit(1)
    y.sum().backward()
ctx.say(f"attempt {attempt}: {ctx.describe()}; gathered {y.flatten().tolist()}, grad {x.grad.flatten().tolist()}")
world.teardown()
