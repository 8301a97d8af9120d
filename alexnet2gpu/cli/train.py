"""Train AlexNet with the paper's recipe (Krizhevsky et al. 2012, §5), on ILSVRC folders or the built-in set.

The built-in demo (no arguments; generates a small synthetic set once in ~/.cache/alexnet2gpu, trains on the
CPU in under ~10 minutes and gets well below chance error):
    python train.py
ILSVRC-2012 with the paper's recipe (DIR/train/<wnid>/*.JPEG and DIR/val/<wnid>/*.JPEG):
    python train.py --data /data/ilsvrc2012 --epochs 90 --in-channels 3 --num-classes 1000
    python train.py --data /data/ilsvrc2012 --layout two-device --devices cuda:0,cuda:1 --workers 12
    python train.py --data /data/ilsvrc2012 --amp bf16 --channels-last --batch-size 256 --lr-scaling linear
    python train.py --data /data/ilsvrc2012 --schedule step --lr-steps 30,60,80 --init caffe
Continue the latest run under runs/ (or a given run folder / checkpoint file):
    python train.py --resume auto
    python train.py --resume runs/run-20250101-120000
Ten-crop and centre-crop error of a checkpoint (the paper's test protocol):
    python train.py --evaluate runs/run-20250101-120000/checkpoints/best.pt --data /data/ilsvrc2012
    python train.py --test-only --resume auto --data-path /data/ilsvrc2012     (torchvision's spelling)
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

from alexnet2gpu.train.config import DEMO, GROUPS, Config


def _help(f) -> str:
    """A setting's help with its defaults, from alexnet2gpu/train/config.py (the one place they are stated)."""
    meta = f.metadata
    value = f.default_factory() if f.default is MISSING else f.default
    default = meta["shown"] if meta["shown"] is not None else \
        (None if value is None or value is False or value == [] else _flag_text(value))
    notes = ([f"default {default}"] if default else []) + \
        ([f"demo {_flag_text(meta['demo'])}"] if meta["demo"] is not MISSING else [])
    return f"{meta['help']} ({'; '.join(notes)})" if notes else meta["help"]


def _flag_text(value) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)


class _Parser(argparse.ArgumentParser):
    def _get_option_tuples(self, option_string):
        """A prefix that matches one setting under two spellings (--num: --num-classes and the hidden
        --num_classes) abbreviates that setting, not two: argparse would call it ambiguous."""
        matches, dests = [], set()
        for match in super()._get_option_tuples(option_string):
            if match[0].dest not in dests:
                dests.add(match[0].dest)
                matches.append(match)
        return matches

    def error(self, message: str):
        """An unknown --multi_word flag (they were accepted once) is told its spelling with hyphens."""
        if message.startswith("unrecognized arguments: "):
            for word in message.split()[2:]:
                name = word.split("=", 1)[0]
                if name.startswith("--") and "_" in name:
                    hyphens = name.replace("_", "-")
                    known = [hyphens] if hyphens in self._option_string_actions else \
                        [m[1] for m in self._get_option_tuples(hyphens)]
                    if len(known) == 1:
                        message += f" (flags are spelled with hyphens: {known[0]})"
                        break
        super().error(message)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def _format_action_invocation(self, action):
        """"--batch-size, -b BATCH_SIZE": a flag, its aliases beside it, then its value once (not after each)."""
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        value = self._format_args(action, self._get_default_metavar_for_optional(action))
        return f"{', '.join(action.option_strings)} {value}"


def _reader(parse, refused: dict):
    """`parse`, refusing the values of `refused` ({value: why}) in one sentence."""
    if not refused:
        return parse

    def read(text: str):
        if text in refused:
            raise argparse.ArgumentTypeError(f"{text} is not offered: {refused[text]}")
        return parse(text)
    read.__name__ = getattr(parse, "__name__", "value")  # argparse names the type in its "invalid ... value"
    return read


NOT_SETTINGS = ("evaluate", "test_only")  # flags that choose what to do, not settings of the run


def parser() -> argparse.ArgumentParser:
    p = _Parser(description=__doc__.split("\n")[0], usage="%(prog)s [-h] [--data DIR] [--resume auto|RUN|CKPT] "
                "[--evaluate CKPT] [OPTIONS]", formatter_class=_Formatter, epilog=__doc__.split("\n", 1)[1],
                allow_abbrev=True)  # --batch 8: a prefix of one flag (argparse's default, relied on)
    groups = {key: p.add_argument_group(title) for key, title in GROUPS.items()}
    for f in fields(Config):
        meta, flag = f.metadata, "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            kw = dict(action="store_true")
        else:
            parse = meta["parse"] or (type(meta["choices"][0]) if meta["choices"] else None) or \
                (type(f.default) if f.default is not None else str)
            kw = dict(type=_reader(parse, meta["refused"]), choices=meta["choices"], metavar=meta["metavar"])
            if meta["bare"] is not MISSING:  # the flag alone means this value (--amp: bf16)
                kw.update(nargs="?", const=meta["bare"])
        groups[meta["group"]].add_argument(flag, *meta["aliases"], dest=f.name, default=None, help=_help(f), **kw)
        if meta["hidden"]:  # old spellings: accepted, not shown
            p.add_argument(*meta["hidden"], dest=f.name, default=None, help=argparse.SUPPRESS, **kw)
        if f.name == "resume":
            groups["run"].add_argument("--evaluate", metavar="CKPT", default=None,
                                       help="only evaluate CKPT (or a run folder, or a .safetensors file) on val: "
                                            "centre crop and ten crops")
            groups["run"].add_argument("--test-only", action="store_true",
                                       help="only evaluate what --resume names, as --evaluate does (auto: the "
                                            "checkpoint --resume auto would continue from)")
    return p


def build_config(args: argparse.Namespace):
    from alexnet2gpu.data.folders import default_workers

    given = {k: v for k, v in vars(args).items() if v is not None and v is not False and k not in NOT_SETTINGS}
    values = dict(DEMO if args.data is None else {}, workers=default_workers())
    values.update(given)
    return Config(**values), given


def to_evaluate(args: argparse.Namespace, cfg: Config, given: dict):
    """The checkpoint to evaluate, or None to train: --evaluate CKPT, or --test-only --resume CKPT (torchvision's
    spelling), whose --resume (and --out, for auto) then only find the checkpoint and leave `given`."""
    if not args.test_only:
        return args.evaluate
    from alexnet2gpu.errors import TrainError
    from alexnet2gpu.weights.checkpoint import latest_checkpoint

    if args.resume is None:
        if args.evaluate:
            return args.evaluate
        raise TrainError("--test-only evaluates the checkpoint that --resume names: add --resume CKPT (a checkpoint, "
                         "a run folder, or auto), or use --evaluate CKPT")
    if args.evaluate:
        raise TrainError(f"--test-only evaluates --resume {args.resume}, and --evaluate names {args.evaluate}: "
                         "give one of them")
    del given["resume"]
    if args.resume != "auto":
        return args.resume
    given.pop("out", None)
    found = latest_checkpoint(cfg.out)
    if found is None:
        raise TrainError(f"--test-only --resume auto: no run folder in {cfg.out} holds a checkpoint to evaluate: "
                         "name one with --resume CKPT, or the folder that holds the runs with --out DIR")
    return found


class Terminated(Exception):
    """SIGTERM: torchrun stops the other ranks this way when one fails; so do job schedulers."""


_RUNNING = []  # non-empty while the run may be interrupted; afterwards its own outcome is what is reported


def _terminate(signum, frame):
    if _RUNNING:
        _RUNNING.clear()
        raise Terminated  # unwind: temporary files are removed, the process group is left


def main(argv=None) -> int:
    from alexnet2gpu.train.run_log import capture

    args = parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        with capture():  # what is printed, errors included, also goes to RUN/train.log
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
    evaluating = args.evaluate or args.test_only
    try:
        _RUNNING.append(True)
        try:
            cfg, given = build_config(args)
            checkpoint = to_evaluate(args, cfg, given)
            if checkpoint:
                evaluate_checkpoint(checkpoint, cfg, given)
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
        print("train.py: interrupted" if evaluating else stop_message("interrupted", runs), file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - SIGTERM, however it surfaced; anything else as it is
        if not _by_sigterm(e):
            raise
        print("train.py: stopped by SIGTERM" if evaluating else stop_message("stopped by SIGTERM", runs),
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
