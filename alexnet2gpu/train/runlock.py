"""One live run per run folder: a lock held for the run's whole life, which a crashed run cannot leave stuck.

Two runs writing one folder would overwrite each other's epoch_NNNN.pt, best.pt and config.json. The lock
is a POSIX record lock (fcntl.lockf) on RUN/run.lock: the kernel drops it when the process ends, however it
ends (SIGKILL included), so a restarted run (torchrun --max-restarts) takes it again at once. Record locks
belong to the process, not to the open file, so the loader's forked workers never hold it after their
parent died. The file holds the holder's PID and host, for the message a second run gets.
"""
from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from alexnet2gpu.errors import TrainError

LOCK_FILE = "run.lock"


class RunFolderLock:
    """The held lock on `path`; `release()` (or the process ending) frees it."""

    def __init__(self, path: Path, file):
        self.path, self._file = path, file

    def release(self) -> None:
        if self._file is not None:
            fcntl.lockf(self._file, fcntl.LOCK_UN)
            self._file.close()  # the file stays: removing it could race with a run opening it right now
            self._file = None


def claim_run_folder(path, numbered: bool = False) -> RunFolderLock:
    """Create the run folder `path` and lock it. `numbered`: a folder of that name that already exists is
    another run's, so take the first free `path-2`, `path-3` ... instead (two runs started in the same
    second get different folders). Raises TrainError naming the folder and the process holding it."""
    base = path = Path(path)
    n = 1
    while True:
        try:
            path.mkdir(parents=True, exist_ok=not numbered)
            break
        except FileExistsError:
            if not numbered:
                raise TrainError(f"run folder {path} exists and is not a folder: pass another --run-name.") from None
            n += 1
            path = base.with_name(f"{base.name}-{n}")
        except OSError as e:
            raise TrainError(f"cannot create the run folder {path} ({e.strerror or e}): pass --out a folder you can "
                             "write to.") from None
    try:
        file = open(path / LOCK_FILE, "a+")
    except OSError as e:
        raise TrainError(f"cannot write in the run folder {path} ({e.strerror or e}): pass --out a folder you can "
                         "write to.") from None
    try:
        fcntl.lockf(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        file.seek(0)
        holder = file.read().strip() or "unknown"
        file.close()
        raise TrainError(f"run folder {path} is in use by another run (process {holder}): wait for it to end or stop "
                         "it, or pass another --run-name or --out.") from None
    file.seek(0)
    file.truncate()
    file.write(f"{os.getpid()} on {socket.gethostname()}\n")
    file.flush()
    return RunFolderLock(path, file)
