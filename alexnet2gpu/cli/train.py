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
A quick smoke test (2 steps, then validate and checkpoint):
    python train.py --max-steps 2 --out /tmp/runs
One tower per process (the paper's two GPUs as two ranks; 4 processes = 2 tower pairs, data-parallel):
    torchrun --standalone --nproc_per_node=2 train.py --data /data/ilsvrc2012
    torchrun --standalone --nproc_per_node=4 --max-restarts=3 train.py --data /data/ilsvrc2012 --resume auto
Outputs in RUN/ = OUT/run-YYYYmmdd-HHMMSS: config.json, metrics.csv, curves.png, conv1_kernels.png,
checkpoints/epoch_NNNN.pt (the last --keep) and checkpoints/best.pt.
"""
from __future__ import annotations

import argparse
import signal
import sys

# Defaults without --data: the built-in set and settings measured to learn within ~10 minutes on 2 CPU cores.
DEMO = dict(num_classes=10, train_per_class=40, val_per_class=10, epochs=11, batch_size=32, lr=0.01, init="caffe",
            schedule="step", lr_steps=[5])
# Defaults with --data: the paper (§5): batch 128, lr 0.01, 90 epochs, weights N(0, 0.01^2), biases 1.
PAPER = dict(num_classes=None, train_per_class=0, val_per_class=0, epochs=90, batch_size=128, lr=0.01, init="paper",
             schedule="plateau", lr_steps=[])


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _strs(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])

    def add(flag: str, *short: str, **kw):  # every --multi-word flag also answers to --multi_word
        names = [flag, *short] + (["--" + flag[2:].replace("-", "_")] if "-" in flag[2:] else [])
        p.add_argument(*names, default=None, **kw)

    add("--data", help="folder with train/ and val/ of class folders (ILSVRC-2012 layout); default: built-in set")
    add("--epochs", type=int, help=f"default 90 (demo {DEMO['epochs']})")
    add("--batch-size", type=int, help=f"per tower pair; default 128 (demo {DEMO['batch_size']})")
    add("--lr", type=float, help="default 0.01")
    add("--lr-scaling", choices=("none", "linear"), help="linear: lr x effective batch / 128 (default none)")
    add("--momentum", type=float, help="default 0.9")
    add("--weight-decay", type=float, help="default 5e-4, on weights")
    add("--bias-decay", action="store_true", help="weight decay on biases too (the original code had none)")
    add("--schedule", choices=("plateau", "step"), help="plateau (default): lr / 10 when val error stalls, <= 3 times")
    add("--patience", type=int, help="plateau: epochs without improvement before a drop (default 5)")
    add("--lr-steps", type=_ints, help="step: epochs after which lr / 10, e.g. 30,60,80")
    add("--num-classes", type=int, help="default: the number of class folders (demo 10)")
    add("--in-channels", type=int, help="3 (RGB, default) or 1 (grey)")
    add("--layout", choices=("auto", "merged", "two-device", "tower-parallel"),
        help="auto (default): two-device on 2+ GPUs, tower-parallel under torchrun, merged otherwise")
    add("--init", choices=("paper", "caffe"), help="paper: biases 1 (default with --data); caffe: 0.1 (demo)")
    add("--dropout", type=float, help="default 0.5")
    add("--seed", type=int, help="default 0")
    add("--workers", "-j", type=int, help="data loader processes (default: the usable CPU cores minus one, at least 1; "
                                          "under torchrun each rank takes its share of the machine's cores)")
    add("--decode", choices=("auto", "cpu", "gpu"),
        help="where JPEGs are decoded and cropped: cpu (loader workers, PIL), gpu (nvJPEG on the training GPU; "
             "workers only read files), auto (default): gpu on a CUDA device when the data folder is prepared "
             "(all images 256x256), else cpu")
    add("--out", help="parent folder of run folders (default runs)")
    add("--run-name", help="run folder name (default run-YYYYmmdd-HHMMSS)")
    add("--resume", help="auto (latest run under --out), a run folder or a checkpoint file")
    add("--evaluate", metavar="CKPT", help="only evaluate CKPT on val: centre crop and ten crops")
    add("--max-steps", type=int, help="stop after this many training steps in all (the epoch then validates)")
    add("--amp", choices=("bf16",), help="bf16 autocast (CUDA)")
    add("--channels-last", action="store_true", help="channels-last memory format (pays with bf16 on GPUs)")
    add("--compile", action="store_true", help="torch.compile the model: a minute or more of compiling, then faster "
                                             "steps on a GPU")
    add("--device", help="merged layout: cpu, cuda, cuda:1; torchrun: cpu or cuda, each rank on cuda:LOCAL_RANK "
                         "(default: cuda when there is one)")
    add("--devices", type=_strs, help="two-device layout: the towers' devices, e.g. cuda:0,cuda:1 or cpu,cpu")
    add("--pca", choices=("paper", "original", "none"), help="PCA colour noise strength (default paper)")
    add("--crop", type=int, choices=(224, 227), help="crop size: 224 (paper, default) or 227 (caffe)")
    add("--mean", type=_floats, help="per-channel mean on 0..255, e.g. 123.7,116.3,103.5 (default: computed)")
    add("--mean-images", type=int, help="images sampled to compute the mean (default 10000)")
    add("--val-crops", type=int, choices=(1, 10), help="per-epoch validation: 1 (centre, default) or 10 crops")
    add("--max-corrupt", type=int, help="unreadable images skipped before giving up (default 100)")
    add("--keep", type=int, help="epoch checkpoints kept besides best.pt (default 2)")
    add("--dist-timeout", type=float, help="torchrun: seconds a rank waits on a silent peer before it stops (default 300)")
    add("--train-per-class", type=int, help=f"built-in set: training images per class (demo {DEMO['train_per_class']})")
    add("--val-per-class", type=int, help=f"built-in set: validation images per class (demo {DEMO['val_per_class']})")
    return p


def build_config(args: argparse.Namespace):
    from alexnet2gpu.data import default_workers
    from alexnet2gpu.trainer import Config

    given = {k: v for k, v in vars(args).items() if v is not None and v is not False and k != "evaluate"}
    base = DEMO if args.data is None else PAPER
    values = dict(base, workers=default_workers())
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
    from alexnet2gpu.allocator import keep_freed_memory
    from alexnet2gpu.world import PeerLost, Stopped
    from alexnet2gpu.errors import TrainError
    from alexnet2gpu.trainer import evaluate_checkpoint, fit

    keep_freed_memory()  # reuse freed activation blocks instead of page-faulting them in every step (allocator.py)
    try:
        _RUNNING.append(True)
        try:
            cfg, given = build_config(args)
            if args.evaluate:
                evaluate_checkpoint(args.evaluate, cfg)
            else:
                fit(cfg, given)
        finally:
            _RUNNING.clear()
    except (TrainError, ValueError, NotImplementedError, PeerLost) as e:  # ValueError: the model package's checks
        print(f"train.py: error: {e}", file=sys.stderr)
        return 1
    except Stopped:  # under torchrun: rank 0 failed and printed why
        return 1
    except KeyboardInterrupt:
        print("train.py: interrupted; finished epochs are checkpointed: continue with --resume auto", file=sys.stderr)
        return 130
    except Terminated:
        print("train.py: stopped by SIGTERM (under torchrun: another rank failed, see its output); finished epochs "
              "are checkpointed: continue with --resume auto", file=sys.stderr)
        return 143
    return 0


if __name__ == "__main__":
    sys.exit(main())
