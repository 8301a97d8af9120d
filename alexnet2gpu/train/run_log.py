"""RUN/train.log: everything train.py prints, kept in the run folder.

`capture()` (around train.py's main, and trainer.fit) passes every write to stdout and stderr on unchanged
and keeps each finished line as a terminal ends up showing it, so the progress bar's redraws (carriage
returns, erase-line sequences) leave nothing and a line printed over the bar is kept once. Lines printed
before the run folder is claimed (the config banner, the data set's notes) are held until `attach` opens
RUN/train.log on the main rank; the other ranks print nothing and write no log. The file is appended to, each
line flushed as it is written (a crash or kill -9 loses none), and a resumed run adds a separator line, so
nothing already written is lost. With stdout a terminal, `file_writer` gives the batch-job progress lines
(batch_log.StepLog) a way into the log alone.
"""
from __future__ import annotations

import os
import re
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

LOG = "train.log"
MAX_HELD = 10_000  # lines held before the folder is known; --evaluate and a failed start hold and drop them
# What the terminal shows last on a line: the text after its last carriage return or erase-line sequence.
REDRAWN = re.compile(r"^.*(\r|\x1b\[K)", re.DOTALL)
ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")  # other ANSI sequences (colours): not text


def shown(line: str) -> str:
    """A line as a terminal ends up showing it."""
    return ESCAPES.sub("", REDRAWN.sub("", line))


class RunLog:
    """The lines of one train.py invocation: held until `open`, then appended to RUN/train.log."""

    def __init__(self):
        self.pid = os.getpid()  # forked loader workers inherit the streams: only this process logs
        self.held: list[str] = []
        self.file = None
        self.path: Path | None = None
        self.lock = threading.Lock()  # the GPU decoding threads may print too

    def feed(self, tee: "_Tee", text: str) -> None:
        if os.getpid() != self.pid:
            return
        with self.lock:
            *lines, rest = (tee.pending + text).split("\n")
            start = max(rest.rfind("\r"), 0)  # a progress bar never ends its line: keep its last draw only
            tee.pending = rest[start:]
            for line in lines:
                self._keep(shown(line))

    def note(self, line: str) -> None:
        """A line for the log alone (not printed)."""
        with self.lock:
            self._keep(line)

    def _keep(self, line: str) -> None:
        if self.file is None:
            if self.path is None and len(self.held) < MAX_HELD:
                self.held.append(line)
            return
        try:
            self.file.write(line + "\n")
            self.file.flush()  # line by line: a crash loses nothing printed before it
        except OSError as e:  # a full disk: the run goes on, and its checkpoint write says what is wrong
            self._stop(e)

    def open(self, run_dir, resumed: bool) -> None:
        """Append to RUN/train.log from now on, the lines held so far first. A file that already holds lines
        (a resumed run's, or an earlier start's that finished no epoch) gets a separator line first."""
        self.path = Path(run_dir) / LOG
        with self.lock:
            try:
                earlier = self.path.exists() and self.path.stat().st_size > 0
                self.file = open(self.path, "a", encoding="utf-8", errors="replace")
            except OSError as e:
                self._stop(e)
                return
            if earlier:
                when = time.strftime("%Y-%m-%d %H:%M:%S")
                self._keep(f"----- {when}: resumed -----" if resumed else
                           f"----- {when}: started again (the start above finished no epoch) -----")
            held, self.held = self.held, []
            for line in held:
                self._keep(line)

    def _stop(self, error: OSError) -> None:
        if self.file is not None:
            try:
                self.file.close()
            except OSError:
                pass
        self.file, self.held = None, []
        sys.__stderr__.write(f"train.py: note: could not write {self.path} ({error.strerror or error}): the run goes "
                             "on without it\n")

    def close(self, error: BaseException | None = None) -> None:
        """Flush what is left; an unexpected error's traceback goes to the log too (it is printed after this)."""
        with self.lock:
            if error is not None and not isinstance(error, (KeyboardInterrupt, SystemExit)):
                for line in "".join(traceback.format_exception(error)).rstrip("\n").split("\n"):
                    self._keep(line)
            if self.file is not None:
                self.file.close()
                self.file = None


class _Tee:
    """A text stream that writes through to `stream` and feeds `log`; anything else is the stream's."""

    def __init__(self, stream, log: RunLog):
        self.stream, self.log, self.pending = stream, log, ""

    def write(self, text: str) -> int:
        written = self.stream.write(text)
        self.log.feed(self, text)
        return written

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name):  # isatty (the progress bar asks), fileno, encoding...
        return getattr(self.stream, name)


_active: RunLog | None = None


@contextmanager
def capture():
    """Keep what is printed from here on for RUN/train.log; within a capture already running, that one."""
    global _active
    if _active is not None and _active.pid == os.getpid():
        yield _active
        return
    log, saved = RunLog(), (sys.stdout, sys.stderr)
    sys.stdout, sys.stderr = _Tee(sys.stdout, log), _Tee(sys.stderr, log)
    _active = log
    error = None
    try:
        yield log
    except BaseException as e:
        error = e
        raise
    finally:
        sys.stdout, sys.stderr = saved
        _active = None
        log.close(error)


def attach(run_dir, resumed: bool) -> None:
    """The run folder is claimed (main rank): the capture running, if any, writes RUN/train.log from now on."""
    if _active is not None and _active.pid == os.getpid():
        _active.open(run_dir, resumed)


def file_writer():
    """A function writing one line to the open RUN/train.log alone, or None when there is none."""
    log = _active
    if log is None or log.pid != os.getpid() or log.file is None:
        return None
    return log.note
