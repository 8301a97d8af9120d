"""train.py with a fault installed, for the fault tests under torchrun (tests/train/test_train_torchrun.py):

    torchrun ... tests/train_with_a_fault.py RANK:STEP [train.py's arguments]

Rank RANK kills itself with SIGKILL just before training step STEP, in torchrun's first attempt only, so
a job run with --max-restarts goes on without the fault after the restart."""
import os
import signal
import sys

from alexnet2gpu.cli.train import main
from alexnet2gpu.train import engine


def kill_at(rank_step: str):
    rank, step = (int(v) for v in rank_step.split(":"))

    def hook(ctx, at: int) -> None:
        first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        if first_attempt and (ctx.rank if ctx is not None else 0) == rank and at == step:
            os.kill(os.getpid(), signal.SIGKILL)
    return hook


if __name__ == "__main__":
    engine.STEP_HOOKS.append(kill_at(sys.argv[1]))
    sys.exit(main(sys.argv[2:]))
