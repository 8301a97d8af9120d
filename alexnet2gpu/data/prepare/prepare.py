"""Down-sample an image folder once to the paper's 256x256 (§2): shorter side 256, centre crop, JPEG.

    python -m alexnet2gpu.prepare SRC DST                  # SRC/train/<wnid>/*.JPEG, SRC/val/... -> DST/...
    python -m alexnet2gpu.prepare SRC DST --workers 8 --quality 90
    python -m alexnet2gpu.prepare SRC DST --val-labels LOC_val_solution.csv   # ILSVRC's flat val/

Every output is written to a temporary file and renamed, so a killed run leaves only whole images; the
same command continues it, at the same --quality (DST/alexnet2gpu_prepare_started.json holds the settings of
a run under way). Unreadable sources are listed in DST/prepare_errors.txt; the marker
DST/alexnet2gpu_prepared.json is written last. Training then decodes 256x256 files without resizing.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import gc
import itertools
import json
import multiprocessing
import os
import signal
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path

from PIL import Image

from alexnet2gpu.errors import PrepareError, PrepareFailed
from alexnet2gpu.progress import Progress, format_seconds

from ..imaging import RESIZE, resize_center, to_rgb, why_unreadable
from .plan import Job, Plan, plan_jobs

FORMAT = "alexnet2gpu-prepared-v1"
MARKER = "alexnet2gpu_prepared.json"
STARTED = "alexnet2gpu_prepare_started.json"  # a run's settings from its start until the marker is written
ERRORS = "prepare_errors.txt"
LOCK = ".alexnet2gpu_prepare.lock"
TMP_SUFFIX = ".prepare-tmp"  # not an image extension: train.py never reads a temporary file
DEFAULT_QUALITY = 90  # docs/prepare.md: 37 dB against the exact 256x256, 70% of quality 95's bytes
LOG_EVERY_S = 10.0  # progress lines when stdout is not a terminal


# ---------------------------------------------------------------- one image (runs in the worker processes)

_parent_pid = None


def _init_worker(parent_pid: int) -> None:
    global _parent_pid
    _parent_pid = parent_pid
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the main process, which stops the pool


def decode_256(path: str) -> Image.Image:
    """The source as the 256x256 8-bit RGB image training would compute from it (data.load_image)."""
    with warnings.catch_warnings(), Image.open(path) as im:
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # PIL still refuses past twice the limit
        im.draft("RGB", (RESIZE, RESIZE))  # JPEG: decode at a reduced scale >= 256, as load_image does
        out = resize_center(to_rgb(im))
        out.load()
    return out


def write_jpeg_atomic(image: Image.Image, path: str, quality: int) -> None:
    """Write beside `path` and rename over it: a killed run never leaves a half-written visible file."""
    tmp = f"{path}.{os.getpid()}{TMP_SUFFIX}"
    try:
        image.save(tmp, "JPEG", quality=quality)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def prepare_one(task: tuple[Job, int]) -> tuple[Job, str | None, str | None]:
    """(job, why the source failed or None, why the output could not be written or None)."""
    job, quality = task
    if _parent_pid is not None and os.getppid() != _parent_pid:
        os._exit(1)  # the main process was killed: stop instead of writing on as an orphan
    try:
        image = decode_256(job.source)
    except Exception as e:  # broken files raise OSError, SyntaxError, ValueError, MemoryError...: list, go on
        return job, why_unreadable(e), None  # one line, no tabs: the errors file is tab-separated
    try:
        write_jpeg_atomic(image, job.output, quality)
    except OSError as e:
        return job, None, f"{job.output} ({e.strerror or e})"
    return job, None, None


# ---------------------------------------------------------------- the run

def say(line: str) -> None:
    print(line, flush=True)  # flushed: progress lines reach a log file as they happen


def run_jobs(jobs: list[Job], quality: int, workers: int, log=say):
    """Yield (job, failure reason or None) as images finish; raise PrepareFailed when an output cannot be written."""
    progress = Progress(len(jobs), "prepare")
    last_line = time.monotonic()
    tasks = zip(jobs, itertools.repeat(quality))  # lazily: ILSVRC has 1.33 M jobs
    if workers == 1:
        results = map(prepare_one, tasks)
        pool = contextlib.nullcontext()
    else:
        gc.freeze()  # forked workers then never touch (and so copy) the main process's 1.33 M jobs
        pool = multiprocessing.Pool(workers, _init_worker, (os.getpid(),))
        results = pool.imap_unordered(prepare_one, tasks, chunksize=max(1, min(64, len(jobs) // (workers * 8))))
    try:
        with pool:
            for job, reason, write_error in results:
                if write_error:
                    raise PrepareFailed(f"could not write {write_error}; finished images are kept: free space or "
                                        "fix permissions, then rerun the same command to continue.")
                progress.update(1)
                if not progress.enabled and time.monotonic() - last_line >= LOG_EVERY_S:
                    last_line = time.monotonic()
                    log(progress.line())
                yield job, reason
    finally:
        gc.unfreeze()
        progress.close()


def prepare(src, dst, quality: int = DEFAULT_QUALITY, workers: int | None = None, val_labels: str | None = None,
            log=say) -> dict:
    """Write DST/<split>/<class>/<name> at 256x256 for every image under SRC/train and SRC/val; return the marker."""
    src, dst = Path(src), Path(dst)
    workers = len(os.sched_getaffinity(0)) if workers is None else workers
    check_arguments(src, dst, quality, workers)
    start = time.perf_counter()
    try:
        with exclusive(dst):
            check_settings(dst, quality)
            return run_plan(plan_jobs(src, dst, val_labels, TMP_SUFFIX), src, dst, quality, workers, start, log)
    except OSError as e:  # a folder that cannot be listed or made, a full disk for the errors file or the marker
        raise PrepareFailed(f"cannot use {e.filename or dst} ({e.strerror or e}); finished images are kept: fix that, "
                            "then rerun the same command to continue.") from None


def run_plan(plan: Plan, src: Path, dst: Path, quality: int, workers: int, start: float, log) -> dict:
    """Write the start record, the planned images, the errors file and the marker; log the start line and the
    summary."""
    counts = {split: dict(written=0, skipped=plan.skipped[split], failed=0) for split in plan.splits}
    failures = list(plan.unlabelled)
    if failures:
        counts["val"]["failed"] += len(failures)
    workers = min(workers, max(1, len(plan.jobs)))
    # Before any image: a killed run's settings, for its resume to compare with (check_settings).
    write_json_atomic(dst / STARTED, dict(format=FORMAT, size=RESIZE, quality=quality, source=str(src.resolve()),
                                          started=now(), version=package_version()))
    log(f"prepare: {src} -> {dst}: {plan.describe()}; {sum(plan.skipped.values())} already done, "
        f"{len(plan.jobs)} to write at quality {quality} with {workers} worker(s)")
    for job, reason in run_jobs(plan.jobs, quality, workers, log):
        counts[job.split]["failed" if reason else "written"] += 1
        if reason:
            failures.append((job.source, reason))
    write_errors(dst, failures)
    os.sync()  # every image reaches the disk before the marker says the folder is done
    marker = dict(format=FORMAT, size=RESIZE, quality=quality, source=str(src.resolve()),
                  splits={s: dict(counts[s], classes=plan.splits[s]) for s in plan.splits},
                  val_labels=str(plan.labels_file.resolve()) if plan.labels_file else None,
                  finished=now(), seconds=round(time.perf_counter() - start, 1), version=package_version())
    write_json_atomic(dst / MARKER, marker)
    (dst / STARTED).unlink(missing_ok=True)  # the marker holds the settings now
    total = {k: sum(c[k] for c in counts.values()) for k in ("written", "skipped", "failed")}
    listed = f" (listed in {dst / ERRORS})" if failures else ""
    log(f"prepare: done in {format_seconds(marker['seconds'])}: {total['written']} written, {total['skipped']} "
        f"already done, {total['failed']} failed{listed}; {', '.join(plan.splits)} in {dst}")
    return marker


def check_arguments(src: Path, dst: Path, quality: int, workers: int) -> None:
    if not 1 <= quality <= 100:
        raise PrepareError(f"--quality {quality} is outside 1..100: pass e.g. --quality {DEFAULT_QUALITY}.")
    if workers < 1:
        raise PrepareError(f"--workers {workers} is not a positive number: pass 1 or more, or leave it out to use "
                           "every core.")
    if not src.is_dir():
        raise PrepareError(f"SRC {src} does not exist or is not a folder: pass the folder that holds train/ and val/.")
    s, d = src.resolve(), dst.resolve()
    if d == s or s in d.parents:
        raise PrepareError(f"DST {dst} is inside SRC {src}: outputs would mix with the sources; pick a DST outside it.")
    for split in ("train", "val"):
        if s == d / split or (d / split) in s.parents:
            raise PrepareError(f"SRC {src} is inside {dst / split}, which prepare writes: pick another DST.")


def check_settings(dst: Path, quality: int) -> None:
    """DST's images were all written at one quality, as its marker says: a finished folder (the marker) or an
    unfinished one (the start record of the run that was stopped) is continued only at its own --quality."""
    info, started = prepared_info(dst), read_record(dst / STARTED)
    if info and info.get("quality") != quality:
        raise PrepareError(f"{dst} was prepared at --quality {info.get('quality')}: rerun with --quality "
                           f"{info.get('quality')} to add to it, or pick an empty DST.")
    if started and started.get("quality") != quality:
        raise PrepareError(f"{dst} holds an unfinished preparation at --quality {started.get('quality')}: rerun with "
                           f"--quality {started.get('quality')} to continue it, or pick an empty DST.")


@contextlib.contextmanager
def exclusive(dst: Path):
    """Create DST, check it is writable, and hold a lock so two runs never write the same folder."""
    try:
        dst.mkdir(parents=True, exist_ok=True)
        lock = open(dst / LOCK, "w")
    except OSError as e:
        raise PrepareError(f"cannot write to DST {dst} ({e.strerror or e}): pass a folder you can write to.") from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise PrepareError(f"another prepare run is writing {dst}: wait for it to finish or stop it.") from None
        yield


def write_errors(dst: Path, failures: list[tuple[str, str]]) -> None:
    """DST/prepare_errors.txt: `source<TAB>reason` per failed source of this run; removed when none failed."""
    path = dst / ERRORS
    if not failures:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(path.name + TMP_SUFFIX)
    tmp.write_text("".join(f"{source}\t{reason}\n" for source, reason in sorted(failures)))
    os.replace(tmp, path)


def write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + TMP_SUFFIX)
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def package_version() -> str:
    try:
        return metadata.version("alexnet2gpu")
    except metadata.PackageNotFoundError:
        return "unknown"


def now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def read_record(path: Path) -> dict | None:
    """A JSON record prepare wrote (the marker, the start record), else None (absent, unreadable, another format)."""
    try:
        info = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("format") == FORMAT else None


def prepared_info(root) -> dict | None:
    """The marker of a folder `prepare` finished (size, quality, counts, source, time, version), else None."""
    return read_record(Path(root) / MARKER)


def is_prepared(root) -> bool:
    """Whether the data folder was prepared (every image re-encoded as a 256x256 JPEG), as the marker file
    the preparation step writes last says."""
    return prepared_info(root) is not None


# ---------------------------------------------------------------- command line

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prepare", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])
    p.add_argument("src", metavar="SRC", help="folder with train/ and/or val/ of class folders (val/ may be flat)")
    p.add_argument("dst", metavar="DST", help="output folder (created); rerun the same command to resume")
    p.add_argument("--quality", type=int, default=DEFAULT_QUALITY, help=f"JPEG quality (default {DEFAULT_QUALITY})")
    p.add_argument("--workers", "-j", type=int, default=None, help="processes (default: every usable core)")
    p.add_argument("--val-labels", metavar="FILE", default=None,
                   help="labels of a flat val/: LOC_val_solution.csv or '<filename> <wnid>' lines "
                        "(default: SRC/LOC_val_solution.csv or SRC/val_labels.txt)")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        prepare(args.src, args.dst, args.quality, args.workers, args.val_labels)
    except PrepareError as e:
        print(f"prepare: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("\nprepare: interrupted; finished images are kept: rerun the same command to continue.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
