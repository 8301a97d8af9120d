"""train.py end to end on prepared data, as a user runs it on a GPU box. It generates photo-like 500x375 JPEG
sources (ILSVRC's typical size) and prepares them once with `alexnet2gpu.prepare`, timing that in source
images/s. Then it runs train.py on the prepared folder for `--steps` steps and reads images/s from the run's
metrics.csv, and the rate of the last third of the last epoch from train.py's progress lines (the first steps pay
for cuDNN's autotuning and Triton's compiles, and the first epoch's first batches for the loader workers' start;
the workers then stay up for the whole run).
Compare that steady rate with bench.py's merged-bf16 row on the same card.

    PYTHONPATH=. python3 tools/e2e_check.py --out DIR              # a GPU box: batch 256, bf16, --decode gpu
    PYTHONPATH=. python3 tools/e2e_check.py --out DIR --device cpu --batch-size 4 --steps 2 --images 12

Sources beyond `--distinct` are hard links to the distinct ones, so generating them stays cheap while
prepare and the loader still read and decode every file. `--epoch-copies N` links every prepared training
image N times in all, so train.py's epoch is N times longer with no more to prepare: each epoch ramps up from
its start (on an H200 a 150-step epoch began at about 10 k images/s and ended at 25 k), and one long epoch
measures the steady rate that a real ILSVRC epoch of 5,000 steps sees.
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from check_common import CLASSES, generate, link_copies  # noqa: E402  (a sibling in tools/)

from alexnet2gpu.data.prepare.measure import SOURCE_QUALITY, photo_like  # noqa: E402
from alexnet2gpu.data.prepare.prepare import prepare  # noqa: E402

PROGRESS = re.compile(r"\| ([\d.]+) img/s \| data wait (\d+) %")


def _write_source(job: tuple[str, int]) -> None:
    """A 500x375 source, ILSVRC's typical size, saved as cameras save them."""
    path, seed = job
    photo_like(seed).save(path, quality=SOURCE_QUALITY)


def train_command(args, data: Path, runs: Path, images: int) -> list[str]:
    epochs = -(-args.steps * args.batch_size // images)  # as many as --steps needs: the rest of the last is cut
    command = [sys.executable, str(ROOT / "train.py"), "--data", str(data), "--device", args.device,
               "--batch-size", str(args.batch_size), "--epochs", str(epochs), "--max-steps", str(args.steps),
               "--out", str(runs), "--run-name", "e2e", "--decode", args.decode, "--val-crops", "1",
               "--log-every", str(max(1, min(args.steps, images // args.batch_size) // 3))]  # a third of an epoch
    if args.device.startswith("cuda"):
        command += ["--amp", "bf16", "--channels-last"]
    if args.workers is not None:
        command += ["--workers", str(args.workers)]
    if args.cuda_graphs:
        command += ["--cuda-graphs"]
    return command


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="an empty or new folder for the sources, the data and the run")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=150, help="training steps (default %(default)s)")
    p.add_argument("--images", type=int, default=None, help="training sources (default: steps x batch; fewer "
                   "make train.py run several epochs over them)")
    p.add_argument("--distinct", type=int, default=4096, help="distinct sources; the rest are hard links")
    p.add_argument("--epoch-copies", type=int, default=1, help="links of each prepared training image in an "
                   "epoch (default %(default)s: the images as prepared)")
    p.add_argument("--decode", default="auto", choices=["auto", "cpu", "gpu"])
    p.add_argument("--workers", type=int, default=None, help="loader processes (default: train.py's)")
    p.add_argument("--cuda-graphs", action="store_true", help="train.py --cuda-graphs")
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        print(f"e2e_check: {out} is not empty: pass a new folder with --out.", file=sys.stderr)
        return 2
    if args.epoch_copies < 1:
        print(f"e2e_check: --epoch-copies {args.epoch_copies}: pass 1 or more.", file=sys.stderr)
        return 2
    images = args.images or args.steps * args.batch_size
    src, data, runs = out / "sources", out / "prepared", out / "runs"

    start = time.perf_counter()
    generate(src, images, val_per_class=2, distinct=min(args.distinct, images), writer=_write_source)
    made = time.perf_counter() - start
    start = time.perf_counter()
    prepare(src, data, log=lambda line: None)
    prepared = time.perf_counter() - start
    sources = images + 2 * CLASSES
    epoch_images = link_copies(data, args.epoch_copies) if args.epoch_copies > 1 else images

    done = subprocess.run(train_command(args, data, runs, epoch_images), capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                              p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)))
    (out / "train.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        print(f"e2e_check: train.py failed (exit {done.returncode}); its output is in {out / 'train.log'}:\n"
              + (done.stdout + done.stderr)[-2000:], file=sys.stderr)
        return 1
    with open(runs / "e2e" / "metrics.csv") as f:
        row = list(csv.DictReader(f))[-1]
    lines = PROGRESS.findall(done.stdout)  # (images/s, data wait %) of each progress line
    steady = (f"{float(lines[-1][0]):,.0f} in the last third of the last epoch (data wait {lines[-1][1]} %)"
              if lines else "no progress line")
    print(f"sources: {sources} 500x375 JPEGs written in {made:.1f} s ({min(args.distinct, images)} distinct)")
    print(f"prepare: {sources / prepared:,.0f} source images/s on {len(os.sched_getaffinity(0))} cores "
          f"({sources} images in {prepared:.1f} s, the final disk sync included)")
    graphs = " --cuda-graphs" if args.cuda_graphs else ""
    print(f"train.py --decode {args.decode}{graphs}, batch {args.batch_size}, {row['steps']} steps on {args.device}, "
          f"epochs of {epoch_images} images: "
          f"{float(row['images_per_s']):,.0f} images/s over the epoch, {steady}, "
          f"{float(row['step_images_per_s']):,.0f} without the time waiting for data, loader "
          f"{float(row['loader_images_per_s']):,.0f}")
    notes = [line for line in done.stdout.splitlines() if "GPU decode thread:" in line]
    if notes:  # which side of the GPU data path the last epoch waited for
        print(notes[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
