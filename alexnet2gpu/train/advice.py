"""The commands train.py's messages advise, written out whole so that they run as printed: "continue with"
names the checkpoint, --out, --data where it was given, and the flags of this invocation that a resume takes
from the command line rather than from the checkpoint (the placement above all, which is chosen afresh)."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

from .config import RESUMABLE

NOT_REPEATED = ("max_steps", "out", "resume")  # a limit of this invocation; --out and --resume are named anyway


def flag_text(name: str, value) -> list[str]:
    """One flag as train.py's parser reads it; [] for an unset one."""
    flag = "--" + name.replace("_", "-")
    if value is None or value is False:
        return []
    if value is True:
        return [flag]
    text = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
    # "--mean=-1,2,3": a value that starts with "-" would read as a flag
    return [f"{flag}={shlex.quote(text)}"] if text.startswith("-") else [flag, shlex.quote(text)]


def command_line(flags: dict, distributed: bool = False) -> str:
    """`python train.py` (or the installed `alexnet2gpu-train`) with `flags` ({setting: value}); under
    torchrun, the torchrun command the run was started with, whose options this process cannot see."""
    if Path(sys.argv[0]).name == "alexnet2gpu-train":  # the installed command: there may be no train.py at hand
        program, alone = "alexnet2gpu-train", "alexnet2gpu-train"
    else:
        program, alone = "train.py", "python train.py"
    words = [f"torchrun <its options as before> {program}" if distributed else alone]
    for name, value in flags.items():
        words += flag_text(name, value)
    return " ".join(words)


def resume_command(checkpoint, out, given: dict, distributed: bool = False, **changes) -> str:
    """The command that continues from `checkpoint` with this invocation's flags, and `changes` (e.g. lr)."""
    flags = {"resume": checkpoint, "out": out}
    flags.update({k: v for k, v in given.items() if k == "data" or (k in RESUMABLE and k not in NOT_REPEATED)})
    flags.update(changes)
    return command_line(flags, distributed)
