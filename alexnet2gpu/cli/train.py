"""Train AlexNet with the paper's recipe (Krizhevsky et al. 2012, §5), on ILSVRC folders or the built-in set.

The built-in demo (no arguments; generates a small synthetic set once in ~/.cache/alexnet2gpu, trains on the
CPU in under ~10 minutes and gets well below chance error):
    python train.py
ILSVRC-2012 with the paper's recipe (DIR/train/<wnid>/*.JPEG and DIR/val/<wnid>/*.JPEG):
    python train.py --data /data/ilsvrc2012 --epochs 90 --in_channels 3 --num_classes 1000
    python train.py --data /data/ilsvrc2012 --layout two-device --devices cuda:0,cuda:1 --workers 12
    python train.py --data /data/ilsvrc2012 --amp bf16 --channels-last --batch-size 256 --lr-scaling linear
    python train.py --data /data/ilsvrc2012 --schedule step --lr-steps 30,60,80 --init caffe
Continue the latest run under runs/ (or a given run folder / checkpoint file):
    python train.py --resume auto
    python train.py --resume runs/run-20250101-120000
Ten-crop and centre-crop error of a checkpoint (the paper's test protocol):
    python train.py --evaluate runs/run-20250101-120000/checkpoints/best.pt --data /data/ilsvrc2012
Fine-tune another run's weights on new classes (fc8 drawn afresh), with TensorBoard curves:
    python train.py --data /data/birds --init-from runs/run-20250101-120000/checkpoints/best.pt --tensorboard
A quick smoke test (2 steps, then validate and checkpoint):
    python train.py --max-steps 2 --out /tmp/runs
One tower per process (the paper's two GPUs as two ranks; 4 processes = 2 tower pairs, data-parallel):
    torchrun --standalone --nproc_per_node=2 train.py --data /data/ilsvrc2012
    torchrun --standalone --nproc_per_node=4 --max-restarts=3 train.py --data /data/ilsvrc2012 --resume auto
Outputs in RUN/ = OUT/run-YYYYmmdd-HHMMSS: config.json, metrics.csv, curves.png, conv1_kernels.png,
checkpoints/epoch_NNNN.pt (the last --keep) and checkpoints/best.pt (tensorboard/ with --tensorboard).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from dataclasses import MISSING, fields

from alexnet2gpu.train.config import DEMO, Config


def _help(f) -> str:
    """A setting's help with its defaults, from alexnet2gpu/train/config.py (the one place they are stated)."""
    meta = f.metadata
    value = f.default_factory() if f.default is MISSING else f.default
    default = meta["shown"] or (None if value is None or value is False or value == [] else _flag_text(value))
    notes = ([f"default {default}"] if default is not None else []) + \
        ([f"demo {_flag_text(meta['demo'])}"] if meta["demo"] is not MISSING else [])
    return f"{meta['help']} ({'; '.join(notes)})" if notes else meta["help"]


def _flag_text(value) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])

    def add(flag: str, *short: str, **kw):  # every --multi-word flag also answers to --multi_word
        names = [flag, *short] + (["--" + flag[2:].replace("-", "_")] if "-" in flag[2:] else [])
        p.add_argument(*names, default=None, **kw)

    for f in fields(Config):
        meta, flag = f.metadata, "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            add(flag, *meta["short"], action="store_true", help=_help(f))
            continue
        parse = meta["parse"] or (type(meta["choices"][0]) if meta["choices"] else None) or \
            (type(f.default) if f.default is not None else str)
        add(flag, *meta["short"], type=parse, choices=meta["choices"], help=_help(f))
    add("--evaluate", metavar="CKPT", help="only evaluate CKPT (or a run folder, or a .safetensors file) on val: "
                                           "centre crop and ten crops")
    return p


def build_config(args: argparse.Namespace):
    from alexnet2gpu.data.folders import default_workers

    given = {k: v for k, v in vars(args).items() if v is not None and v is not False and k != "evaluate"}
    values = dict(DEMO if args.data is None else {}, workers=default_workers())
    values.update(given)
    return Config(**values), given


class Terminated(Exception):
    """SIGTERM: torchrun stops the other ranks this way when one fails; so do job schedulers."""


_RUNNING = []  # non-empty while the run may be interrupted; afterwards its own outcome is what is reported


def _terminate(signum, frame):
    if _RUNNING:
        _RUNNING.clear()
        raise Terminated  # unwind: temporary files are removed, the process group is left


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _main(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(args: argparse.Namespace) -> int:
    from alexnet2gpu.bench.allocator import keep_freed_memory
    from alexnet2gpu.distributed.world import PeerLost, Stopped
    from alexnet2gpu.errors import TrainError
    from alexnet2gpu.train.trainer import evaluate_checkpoint, fit

    keep_freed_memory()  # reuse freed activation blocks instead of page-faulting them in every step (allocator.py)
    runs = []  # the run once set up: a stop from outside names the command that resumes it
    try:
        _RUNNING.append(True)
        try:
            cfg, given = build_config(args)
            if args.evaluate:
                evaluate_checkpoint(args.evaluate, cfg, given)
            else:
                fit(cfg, given, started=runs.append)
        finally:
            _RUNNING.clear()
    except (TrainError, ValueError, NotImplementedError, PeerLost) as e:  # ValueError: the model package's checks
        print(f"train.py: error: {e}", file=sys.stderr)
        return 1
    except Stopped:  # under torchrun: rank 0 failed and printed why
        return 1
    except KeyboardInterrupt:
        print("train.py: interrupted" if args.evaluate else stop_message("interrupted", runs), file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - SIGTERM, however it surfaced; anything else as it is
        if not _by_sigterm(e):
            raise
        print("train.py: stopped by SIGTERM" if args.evaluate else stop_message("stopped by SIGTERM", runs),
              file=sys.stderr)
        return 143
    return 0


def stop_message(what: str, runs: list) -> str:
    """The line for a run stopped from outside (Ctrl-C, SIGTERM): the command, as it runs, that resumes it
    (trainer.Run.resume_command: its checkpoint, --out, --data where given, and the flags given)."""
    why = " (under torchrun: another rank failed, see its output)" if what.endswith("SIGTERM") and _torchrun() else ""
    if not runs:
        return f"train.py: {what}{why} before training began: start again with the same command"
    command = runs[-1].resume_command()
    if command is None:
        return f"train.py: {what}{why}; no epoch had finished, so nothing is checkpointed: start again with the same command"
    return f"train.py: {what}{why}; finished epochs are checkpointed: continue with: {command}"


def _torchrun() -> bool:
    """Whether this process is one of several that torchrun started (distributed/world.py reads the same)."""
    try:
        return int(os.environ.get("WORLD_SIZE") or 1) > 1
    except ValueError:
        return False


def _by_sigterm(error: BaseException | None) -> bool:
    """Whether `error` is the SIGTERM handler's Terminated, or came while unwinding from it. A scheduler or
    torchrun sends SIGTERM to the whole process group: the loader workers die of it too, and DataLoader's
    SIGCHLD handler then raises "DataLoader worker (pid N) is killed by signal: Terminated" in the main
    process, before or while Terminated unwinds it."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, Terminated) or "killed by signal: Terminated" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


if __name__ == "__main__":
    sys.exit(main())
